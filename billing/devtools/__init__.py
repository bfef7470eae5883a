"""Tools for a development machine only (never imported by the web app, the tasks or the services)."""
