"""The Flask application factory. Nothing connects at import time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from flask import Flask

from engine.config import Settings
from engine.db import utcnow
from engine.migrate import open_database
from engine.web.errors import register_error_handlers
from engine.web.recorder import init_recorder

MAX_REQUEST_BYTES = 1 * 1024 * 1024


def create_app(settings: Settings | None = None,
               clock: Callable[[], datetime] = utcnow) -> Flask:
    """`clock` stamps tracking events and form posts (the demo and tests pass a simulated one)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, instance_path=str(settings.instance_path),
                template_folder=str(_templates_dir()))
    app.config.update(SECRET_KEY=settings.secret_key, MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES)
    app.json.sort_keys = False  # Flask 3 ignores the old JSON_SORT_KEYS setting
    app.extensions["nurture.settings"] = settings
    app.extensions["nurture.db"] = open_database(settings)
    app.extensions["nurture.clock"] = clock
    init_recorder(app, db=app.extensions["nurture.db"], settings=settings, clock=clock)

    from engine.web.api import api
    from engine.web.console import init_console
    from engine.web.crm_events import crm_events
    from engine.web.openapi import docs
    from engine.web.pages import pages
    from engine.web.review import review
    from engine.web.sales_api import sales_api
    from engine.web.tracking import tracking
    from engine.web.webhooks import webhooks

    app.register_blueprint(api, url_prefix="/api/v1")
    app.register_blueprint(sales_api, url_prefix="/api/v1")
    app.register_blueprint(docs, url_prefix="/api/v1")
    app.register_blueprint(pages)
    app.register_blueprint(review)
    app.register_blueprint(tracking)
    app.register_blueprint(webhooks, url_prefix="/api/v1/webhooks")
    app.register_blueprint(crm_events, url_prefix="/api/v1/crm")
    init_console(app, base_url=settings.base_url)
    register_error_handlers(app)
    return app


def _templates_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "templates"
