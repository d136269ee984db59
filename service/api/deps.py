"""Dependencies shared by the routers: the database, the settings, the scope checks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from service.db import Database
from service.settings import Settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def require(scope: str) -> Any:
    """A dependency that admits requests holding `scope` (see service.auth)."""

    def check(request: Request) -> None:
        request.app.state.auth.check(request, scope)

    return Depends(check)


ReadScope = require("read")
WriteScope = require("write")
WorkerScope = require("worker")
