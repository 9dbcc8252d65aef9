"""Runtime tests: keel served for real by gunicorn + uvicorn workers in a subprocess."""
