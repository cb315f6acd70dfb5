"""gunicorn settings: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""
import multiprocessing
import os

bind = os.environ.get("CONNECT_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONNECT_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("CONNECT_THREADS", 4))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
keepalive = 5
# connect-service logs one JSON line per request itself (without query strings);
# gunicorn's access log would include them, so it stays off.
accesslog = None
errorlog = "-"
forwarded_allow_ips = os.environ.get("CONNECT_FORWARDED_ALLOW_IPS", "127.0.0.1")
