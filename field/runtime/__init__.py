"""What runs inside an app's venv: the driver protocol, the flows, the injections, the WSGI entry."""
