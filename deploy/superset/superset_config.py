# Superset configuration written for `deploy/superset/run`: metadata in SQLite under
# PCSYNC_SUPERSET_HOME, the secret key from a file only this user reads, no telemetry.
import os

_home = os.environ["PCSYNC_SUPERSET_HOME"]
with open(os.path.join(_home, "secret_key"), encoding="utf-8") as _f:
    SECRET_KEY = _f.read().strip()
SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(_home, "superset.db")
# Served on loopback only, for one person trying it: no public role, no examples.
PUBLIC_ROLE_LIKE = None
SUPERSET_WEBSERVER_ADDRESS = "127.0.0.1"
FEATURE_FLAGS = {"ALERT_REPORTS": False}
# No results backend: charts query pcsync directly; a small cache in memory.
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}
DATA_CACHE_CONFIG = CACHE_CONFIG
