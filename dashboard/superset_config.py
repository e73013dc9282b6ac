"""Superset configuration of the local tierline dashboard (``make dashboard``; read by Superset through
``SUPERSET_CONFIG_PATH``). Everything that differs per instance comes from the environment that
``tierline_dev.dashboard`` sets: the secret key and the SQLite metadata file of the instance."""

import os

SECRET_KEY = os.environ["TIERLINE_SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.environ["TIERLINE_SUPERSET_METADATA"]

# loopback only, no telemetry, no example data, no outbound calls
SUPERSET_WEBSERVER_ADDRESS = "127.0.0.1"
LOAD_EXAMPLES = False

# Superset's default content security policy lets the page reach map tiles, web fonts and a
# telemetry pixel (its navigation bar requests one from a third-party host on every page); this
# dashboard needs none of them: the browser may load and fetch from this server only.
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
FEATURE_FLAGS = {"THUMBNAILS": False, "ALERT_REPORTS": False, "DASHBOARD_RBAC": False}

# The dashboard only reads: no SQL Lab writes, no uploads (the database is imported read-only too).
PREVENT_UNSAFE_DB_CONNECTIONS = True
SQLLAB_TIMEOUT = 60
SUPERSET_WEBSERVER_TIMEOUT = 120
ROW_LIMIT = 50000

# an in-process limiter store is fine for one local process (silences the warning at start)
RATELIMIT_STORAGE_URI = "memory://"
