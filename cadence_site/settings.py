"""Cadence settings: one module, read from the environment (see .env.example for every variable)."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CADENCE_VAR_DIR", BASE_DIR / "var"))

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _service_urls() -> dict[str, str]:
    """URLs from the environment win; otherwise the embedded services a launcher owns, or our own."""
    wanted = {"DATABASE_URL", "REDIS_URL"}
    urls = {name: os.environ[name] for name in wanted if os.environ.get(name)}
    if wanted - urls.keys():
        from cadence_site import embedded

        found = embedded.discover(VAR_DIR)
        for name in wanted - urls.keys():
            if found.get(name):
                urls[name] = found[name]
        if wanted - urls.keys():
            started = embedded.ensure(VAR_DIR)
            for name in wanted - urls.keys():
                urls[name] = started[name]
    return urls


def _secret_key() -> str:
    """No secret lives in the code: the environment's, or one generated once per checkout."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


SERVICE_URLS = _service_urls()
DATABASE_URL = SERVICE_URLS["DATABASE_URL"]
REDIS_URL = SERVICE_URLS["REDIS_URL"]

SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
TESTING = env.bool("CADENCE_TESTING", default="pytest" in sys.modules)
# Hooks that add demo content for `make run` (called by tenants' bootstrap_demo).
CADENCE_DEMO_EXTENSIONS: list[str] = ["orchestrators.demo.create_demo"]

CADENCE_BASE_DOMAIN = env.str("CADENCE_BASE_DOMAIN", default="localhost").lower().strip(".")
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS",
    default=["127.0.0.1", "localhost", "[::1]", CADENCE_BASE_DOMAIN, f".{CADENCE_BASE_DOMAIN}"],
)

# --- applications -------------------------------------------------------------------------
# Public schema only. `tenants` precedes django_tenants so its `migrate` (which also keeps the
# provisioning template current) wins over django-tenants' own.
SHARED_APPS = [
    "tenants",
    "django_tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "tenants.admin_config.CadenceAdminConfig",  # django.contrib.admin, with our operator site
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "plugins.system",
    "tenants.limits",
    "tenants.invitations",
    "tenants.sso",
]
# One PostgreSQL schema per organization. Decided once: moving an app later means faked
# migrations in every schema.
TENANT_APPS = [
    "tenants.audit",
    "tenants.teams",
    "orchestrators",
    "plugins",
    "chat",
    "engine",
    "engine.trust",
    "engine.durable",
    "engine.alerts",
    "engine.retention",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Organization"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# Migrated once, kept empty, copied for every new organization (tenants/provisioning.py).
CADENCE_TEMPLATE_SCHEMA = "cadence_template"
# Off on purpose: django-tenants #1262 leaks rows across tenants after a savepoint rollback.
# tenants/postgresql_backend sets the path only when a connection's path changes, instead.
TENANT_LIMIT_SET_CALLS = False
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
# django-tenants' default, stated: a setting it looks up that is not set is looked up again
# (and raises and catches AttributeError) on every schema_context, four per /v1 turn.
TENANT_DB_ALIAS = "default"

MIDDLEWARE = [
    "cadence_site.requestlog.RequestContextMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "cadence_site.errors.BodySizeLimitMiddleware",
    "cadence_site.inputguard.RequestCharactersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tenants.limits.http.LoginRateLimitMiddleware",
    # After authentication: sessions and users live in public, found through the search_path.
    "tenants.middleware.TenantResolutionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cadence_site.urls"
# The tenant admin is mounted per organization under /orgs/<slug>/ (tenants/middleware.py).
TENANT_ADMIN_URLCONF = "cadence_site.urls_tenant_admin"
WSGI_APPLICATION = None
ASGI_APPLICATION = "cadence_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- data -------------------------------------------------------------------------------------
_db = environ.Env.db_url_config(DATABASE_URL)
_db["ENGINE"] = "tenants.postgresql_backend"
# Under ASGI, persistent connections leak across threads; connections come from a pool instead.
_db["CONN_MAX_AGE"] = 0
_db.setdefault("OPTIONS", {})
# A pool per process (Django 5.1+ with psycopg 3): opening a connection per request costs more
# than the request. The search_path is set per cursor by django-tenants, so pooled connections
# carry no tenant from one request to the next.
# Off under tests: a pool opened before pytest-django renames the database keeps pointing at
# the original one.
if env.bool("CADENCE_DB_POOL", default=not TESTING):
    _db["OPTIONS"]["pool"] = {
        "min_size": 0,
        "max_size": env.int("CADENCE_DB_POOL_MAX", default=20),
        "timeout": 10,
    }
# A turn's hot statements bind their values on the server and are prepared once per connection
# (cadence_site/prepared.py); a pooled connection keeps them from one checkout to the next.
# Behind PgBouncer in transaction mode that needs PgBouncer 1.21 or later with
# max_prepared_statements set; before that, or behind a pooler that cannot carry them, false:
# every statement then binds on the client, as Django's cursors do.
CADENCE_DB_PREPARE = env.bool("CADENCE_DB_PREPARE", default=True)
# Threads that run the database calls of async code (tenants/context.db_executor), per process;
# never more than the pool holds. 0: CPUs + 4, as asyncio's default executor. Fewer threads mean
# fewer GIL hand-offs: streamed /v1 at 20 clients on 2 cores made 256 futex calls and 137
# context switches a request with 6 threads, 96 and 52 with 2 (perf stat); but the server's CPU
# a request measured the same within noise (5.08 against 5.20 ms, 6 threads against 3:
# `benchmarks/ab_trees.py . . --before-env CADENCE_DB_THREADS=6 --after-env
# CADENCE_DB_THREADS=3 --kind stream --clients 20`), so the default is unchanged.
CADENCE_DB_THREADS = env.int("CADENCE_DB_THREADS", default=0)
# A turn's database calls (its run, steps, proof, usage) as green calls on the event loop's
# thread, their waits done by the loop (cadence_site/greendb.py), each with one of the process's
# CADENCE_DB_GREEN_CONNECTIONS (8) connections of its own; false: on the threads above.
CADENCE_DB_GREEN = env.bool("CADENCE_DB_GREEN", default=True)
# The planner's price of a random page read: PostgreSQL's default (4) assumes spinning disks;
# on SSDs, or a working set in memory, 1.1 is the usual figure. At 4 a member's run list page
# filtered by status, orchestrator and trigger walked the newest runs (81,000 rows, 17-25 ms at
# 1,000,000 runs) instead of the status index (8,000 rows, 5 ms), and other pages read as many
# buffers or fewer at 1.1 (benchmarks/run_list.py). Sent with each connection (libpq `options`),
# so the server and its other databases keep their own; empty: the server's value (a pooler
# that refuses startup options, such as PgBouncer without `ignore_startup_parameters`).
_page_cost = env.str("CADENCE_DB_RANDOM_PAGE_COST", default="1.1")
if _page_cost:
    _db["OPTIONS"]["options"] = " ".join(
        filter(None, [_db["OPTIONS"].get("options"), f"-c random_page_cost={float(_page_cost)}"])
    )
_db["TEST"] = {
    "NAME": env.str("CADENCE_TEST_DB_NAME", default=f"test_{_db.get('NAME') or 'cadence'}")
}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "cadence_site.cache.ResilientRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CADENCE_CACHE_PREFIX", default="cadence"),
        "TIMEOUT": 300,
    }
}
# Sessions live in the database and are cached in Redis: losing Redis degrades, loses nothing.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.bool("CADENCE_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env.str("CADENCE_CHANNELS_PREFIX", default="cadence:ch"),
            "capacity": 1000,
            "expiry": 60,
        },
    }
}

CADENCE_RABBITMQ_URL = env.str("CADENCE_RABBITMQ_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=CADENCE_RABBITMQ_URL or REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
# A worker killed by SIGKILL/OOM would still ack its task without this.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CADENCE_BUILD_LEASE_SECONDS = env.int("CADENCE_BUILD_LEASE_SECONDS", default=60)
# A reply or run whose owner's heartbeat (every engine.runs.pipeline.PROGRESS_SECONDS, 1 s) is
# older than this is an orphan (engine/runs/orphans.py): 3 missed heartbeats plus a wide margin
# for a busy database thread. An owner on this host known to be gone is an orphan at once.
CADENCE_ORPHAN_SECONDS = env.float("CADENCE_ORPHAN_SECONDS", default=15.0)
CELERY_TASK_ALWAYS_EAGER = env.bool("CADENCE_CELERY_EAGER", default=False)

# --- files ------------------------------------------------------------------------------------
CADENCE_S3_ENABLED = env.bool("CADENCE_S3_ENABLED", default=False)
MEDIA_ROOT = env.str("CADENCE_MEDIA_ROOT", default=str(VAR_DIR / "media"))
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
# Serve static files straight from the finders: no collectstatic step before `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
if CADENCE_S3_ENABLED:
    AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
    AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
    AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="cadence")
    AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
    AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")
    AWS_DEFAULT_ACL = None
    AWS_S3_FILE_OVERWRITE = False
    _default_storage = {"BACKEND": "storages.backends.s3.S3Storage"}
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- security ---------------------------------------------------------------------------------
CADENCE_ENCRYPTION_KEY = env.str("CADENCE_ENCRYPTION_KEY", default="")
CORS_ALLOWED_ORIGINS = env.list("CADENCE_CORS_ORIGINS", default=[])
CORS_ALLOW_CREDENTIALS = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("CADENCE_BEHIND_PROXY", default=False) else None
)
if TESTING:
    # Tests create many users; PBKDF2's 1M iterations would cost ~0.6 s each.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Request bodies above this size get 413 before anything parses them.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("CADENCE_MAX_BODY_BYTES", default=1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# Plugin package uploads (multipart): the package cap in plugins.archive plus form overhead.
CADENCE_PLUGIN_MAX_UPLOAD_BYTES = env.int(
    "CADENCE_PLUGIN_MAX_UPLOAD_BYTES", default=8 * 1024 * 1024 + 64 * 1024
)
CADENCE_WS_TICKET_TTL = 30
# Warm orchestrator runtimes kept per process (least recently used evicted first).
CADENCE_POOL_WARM_MAX = env.int("CADENCE_POOL_WARM_MAX", default=256)
# Outbound HTTP (LLM endpoints, http tools): private, loopback and link-local addresses are refused
# unless allowed here; user-supplied URLs are an SSRF door.
CADENCE_EGRESS_ALLOW_PRIVATE = env.bool("CADENCE_EGRESS_ALLOW_PRIVATE", default=False)
CADENCE_EGRESS_ALLOWED_HOSTS = env.list("CADENCE_EGRESS_ALLOWED_HOSTS", default=[])
# Networks (CIDR) whose addresses are allowed; `make run` sets the loopback ones unless this is set.
CADENCE_EGRESS_ALLOWED_NETWORKS = env.list("CADENCE_EGRESS_ALLOWED_NETWORKS", default=[])
CADENCE_OUTBOUND_TIMEOUT = env.float("CADENCE_OUTBOUND_TIMEOUT", default=30.0)
CADENCE_OUTBOUND_MAX_RESPONSE_BYTES = env.int(
    "CADENCE_OUTBOUND_MAX_RESPONSE_BYTES", default=2 * 1024 * 1024
)
CADENCE_API_KEY_TOUCH_INTERVAL = 60
# Server processes listen for committed access changes and keep resolved API keys until one
# comes (tenants/access_watch.py); off behind a pooler that cannot carry LISTEN.
CADENCE_ACCESS_WATCH = env.bool("CADENCE_ACCESS_WATCH", default=True)
# Without Redis, rate limits and token budgets let calls through (counted in a metric) unless
# this is off, which refuses them instead (tenants/ratelimit.py).
CADENCE_LIMITS_FAIL_OPEN = env.bool("CADENCE_LIMITS_FAIL_OPEN", default=True)
# A model call with no max_tokens reserves this many completion tokens against token budgets and
# is asked for no more; a reservation whose worker died lapses this many seconds after its last
# heartbeat (tenants/limits/budgets.py).
CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS = env.int(
    "CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS", default=1024
)
CADENCE_BUDGET_LEASE_SECONDS = env.float("CADENCE_BUDGET_LEASE_SECONDS", default=45.0)
if TESTING:
    # The surfaces' own buckets (tenants/limits/enforce.py: tickets, plugin uploads, socket
    # frames; login attempts) are for people, not for a test suite that uploads fifty packages a
    # minute; the tests of the limits set their own figures.
    CADENCE_SCOPE_LIMITS = {"tickets": 100_000, "uploads": 100_000, "frames": 100_000}
    CADENCE_LOGIN_PER_ACCOUNT = CADENCE_LOGIN_PER_ADDRESS = CADENCE_SSO_PER_ADDRESS = 100_000
# How long a limiter waits for Redis's reply (seconds) before deciding without it.
CADENCE_LIMITS_REDIS_TIMEOUT = env.float("CADENCE_LIMITS_REDIS_TIMEOUT", default=5.0)
# Plans, overrides and key limits are kept this long in each process (0 under tests: a test that
# changes a plan sees it at once in a live server process too).
CADENCE_LIMITS_CACHE_SECONDS = env.float(
    "CADENCE_LIMITS_CACHE_SECONDS", default=0.0 if TESTING else 5.0
)

# Email (invitations). The console backend prints messages, which is what `make run` wants; a
# deployment sets EMAIL_URL-style settings through these variables.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL", default=f"Cadence <no-reply@{CADENCE_BASE_DOMAIN}>"
)
# How long an invitation's link works; a resend starts a new period with a new link.
CADENCE_INVITATION_TTL_HOURS = env.int("CADENCE_INVITATION_TTL_HOURS", default=72)
# How long a single sign-on may take between leaving for the provider and coming back.
CADENCE_SSO_STATE_TTL_SECONDS = env.int("CADENCE_SSO_STATE_TTL_SECONDS", default=600)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "tenants.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Caps JSON depth before parsing; refuses NUL and lone surrogates naming the field.
    "DEFAULT_PARSER_CLASSES": ["cadence_site.inputguard.GuardedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "cadence_site.openapi.CadenceAutoSchema",
    "EXCEPTION_HANDLER": "cadence_site.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cadence API",
    "DESCRIPTION": (
        "Cadence runs organizations' AI orchestrators. Authenticate with an organization's API "
        "key (`Authorization: Bearer ck_…`) or a signed-in session. Every error of the Cadence "
        'API has one shape, `{"error": {"code", "message", "details"}}`; the '
        "OpenAI-compatible surface under `/v1` answers in OpenAI's own shapes."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # cadence_site/openapi.py: error responses, the /v1 surface, security schemes, names.
    "OAS_VERSION": "3.1.0",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cadence_site.openapi.postprocess",
    ],
    "ENUM_NAME_OVERRIDES": {
        "Role": "tenants.roles.Role.choices",
        "InvitationStatus": "tenants.invitations.models.INVITATION_STATUSES",
        "Framework": "cadence_site.openapi_enums.FRAMEWORK",
        "OrchestratorStatus": "cadence_site.openapi_enums.ORCHESTRATOR_STATUS",
        "OrganizationStatus": "cadence_site.openapi_enums.ORGANIZATION_STATUS",
        "MessageStatus": "cadence_site.openapi_enums.MESSAGE_STATUS",
        "TeamRole": "cadence_site.openapi_enums.TEAM_ROLE",
        "SsoRole": "tenants.sso.models.MAPPABLE_ROLE_CHOICES",
        "RunStatus": "cadence_site.openapi_enums.RUN_STATUS",
        "RunTrigger": "cadence_site.openapi_enums.RUN_TRIGGER",
        "RunLogLevel": "cadence_site.openapi_enums.RUN_LOG_LEVEL",
        "ShareLevel": "cadence_site.openapi_enums.SHARE_LEVEL",
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/accounts/login/"

# --- logs -------------------------------------------------------------------------------------
LOG_LEVEL = env.str("CADENCE_LOG_LEVEL", default="INFO")
# Run logs (engine/runs/runlog.py): lines at or above this level logged while a run runs are
# stored and streamed with it, whatever the console's level; at most this many lines per run.
CADENCE_RUN_LOG_LEVEL = env.str("CADENCE_RUN_LOG_LEVEL", default="INFO").upper()
CADENCE_RUN_LOG_MAX_LINES = env.int("CADENCE_RUN_LOG_MAX_LINES", default=1000)


def _level_number(name: str) -> int:
    number = logging.getLevelName(name.upper())
    return number if isinstance(number, int) else logging.INFO


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "cadence_site.requestlog.ContextFilter"},
        "redact": {"()": "cadence_site.requestlog.RedactSecretsFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["context", "redact"],
            "level": LOG_LEVEL,
        },
        # Lines logged while a run runs are stored and streamed with it (engine/runs/runlog.py).
        "runs": {"class": "engine.runs.runlog.RunLogHandler", "level": CADENCE_RUN_LOG_LEVEL},
    },
    # The console keeps its level; the root lets through what run logs capture too.
    "root": {
        "handlers": ["console", "runs"],
        "level": min(LOG_LEVEL.upper(), CADENCE_RUN_LOG_LEVEL, key=_level_number),
    },
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.server": {"level": "WARNING"},
    },
}

# --- proofs and the transparency log (engine/trust) -------------------------------------------
# Signer keys (C2SP note form), first current; empty: <CADENCE_VAR_DIR>/signing_keys, made once.
CADENCE_SIGNING_KEYS = env.str("CADENCE_SIGNING_KEYS", default="")
CADENCE_SIGNING_RETIRED_KEYS = env.str("CADENCE_SIGNING_RETIRED_KEYS", default="")
CADENCE_SIGNING_KEY_NAME = env.str("CADENCE_SIGNING_KEY_NAME", default="")
# Where signed tree heads are anchored: a webhook (through the egress policy, HMAC-signed with
# CADENCE_WITNESS_SECRET) and/or a file that a witness keeps (one signed note after another).
CADENCE_WITNESS_URL = env.str("CADENCE_WITNESS_URL", default="")
CADENCE_WITNESS_SECRET = env.str("CADENCE_WITNESS_SECRET", default="")
CADENCE_WITNESS_FILE = env.str("CADENCE_WITNESS_FILE", default="")
CADENCE_TREE_HEAD_INTERVAL = env.int("CADENCE_TREE_HEAD_INTERVAL", default=60)
# A served turn's proof is taken into the log at most this long after its run's commit, together
# with the others committed meanwhile (one sequencing for all: engine/trust/turns.py); 0: each
# just after its own commit. Reading a proof's log entry sequences it at once in any case.
# 0.1 against 0.02: 6% less server CPU per streamed /v1 turn at 1 client (interleaved pairs).
CADENCE_PROOF_SEQUENCE_SECONDS = env.float("CADENCE_PROOF_SEQUENCE_SECONDS", default=0.1)
# --- alerts (engine/alerts) and retention (engine/retention) -----------------------------------
# Alert tasks' queue (empty: Celery's default queue).
CADENCE_ALERTS_QUEUE = env.str("CADENCE_ALERTS_QUEUE", default="")
CADENCE_ALERT_WEBHOOK_TIMEOUT = env.float("CADENCE_ALERT_WEBHOOK_TIMEOUT", default=10.0)
# A failed notification is retried after base, 2·base, 4·base, … seconds (capped), jittered.
CADENCE_ALERT_RETRY_BASE_SECONDS = env.float("CADENCE_ALERT_RETRY_BASE_SECONDS", default=5.0)
CADENCE_ALERT_RETRY_MAX_SECONDS = env.float("CADENCE_ALERT_RETRY_MAX_SECONDS", default=900.0)
CADENCE_ALERT_MAX_ATTEMPTS = env.int("CADENCE_ALERT_MAX_ATTEMPTS", default=8)
# How often runs past their organization's plan retention are purged, and how many per batch.
CADENCE_RETENTION_INTERVAL = env.int("CADENCE_RETENTION_INTERVAL", default=3600)
CADENCE_RETENTION_BATCH = env.int("CADENCE_RETENTION_BATCH", default=1000)
CELERY_BEAT_SCHEDULE = {
    "trust-tree-heads": {
        "task": "trust.tree_heads_publish",
        "schedule": float(CADENCE_TREE_HEAD_INTERVAL),
    },
    # A build whose worker died is re-enqueued once its lease expires, not after the broker's
    # visibility timeout (an hour).
    "orchestrator-builds-sweep": {"task": "orchestrators.builds_sweep", "schedule": 15.0},
    "durable-orphans": {"task": "durable.orphans_sweep", "schedule": 15.0},
    # Windowed alert rules are judged when a run ends; this catches a window whose last run's
    # judgement was lost (a broker outage).
    "alerts-windows": {"task": "alerts.windows_sweep", "schedule": 60.0},
    "runs-retention": {"task": "retention.purge", "schedule": float(CADENCE_RETENTION_INTERVAL)},
    # Replies and runs whose process died are finished (failed `interrupted`, or cancelled).
    "runs-orphans": {"task": "runs.orphans_sweep", "schedule": 10.0},
}
# Queued runs (engine/durable): organizations whose runs only their own workers take,
# {"slug": "celery-queue-name"}; every other organization shares the "runs" queue.
CADENCE_ORG_QUEUES = env.dict("CADENCE_ORG_QUEUES", default={})
CADENCE_RUN_LEASE_SECONDS = env.int("CADENCE_RUN_LEASE_SECONDS", default=30)
CELERY_TASK_ROUTES = {"durable.run_next": {"queue": "runs"}}

# --- metrics and traces (cadence_site/metrics.py, engine/runs/traces.py) ----------------------
# /metrics: with a token, only `Authorization: Bearer <token>`; without, direct loopback requests.
CADENCE_METRICS_TOKEN = env.str("CADENCE_METRICS_TOKEN", default="")
# Distinct values per label (organization, orchestrator, error code) per process; then "other".
CADENCE_METRICS_MAX_LABEL_VALUES = env.int("CADENCE_METRICS_MAX_LABEL_VALUES", default=100)
# PROMETHEUS_MULTIPROC_DIR (several processes) and OTEL_EXPORTER_OTLP_ENDPOINT (traces) are read
# from the environment by prometheus_client and OpenTelemetry themselves.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
