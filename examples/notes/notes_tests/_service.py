"""The notes app under test and a client for it (built by the ``service`` fixture)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from keel.accounts import AccountService
from keel.settings import Settings

PASSWORD = "correct horse battery staple 42"


@dataclass
class Service:
    """The running app and a client for it."""

    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings

    @property
    def accounts(self) -> AccountService:
        accounts: AccountService = self.app.state.keel.service(AccountService)
        return accounts

    async def user(self, email: str) -> str:
        """Register ``email`` and log in; an access token."""
        body = {"email": email, "password": PASSWORD}
        assert (await self.http.post("/auth/register", json=body)).status_code == 202
        return await self.login(email)

    async def login(self, email: str) -> str:
        body = {"email": email, "password": PASSWORD}
        response = await self.http.post("/auth/login", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def call(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self.http.request(method, path, headers=headers, **kw)
