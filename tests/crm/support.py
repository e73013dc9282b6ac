"""Helpers shared by the CRM tests."""

from __future__ import annotations

import requests

ID_FIELD = "Tierline_Customer_Id"
MODULE = "Accounts"


def customer(number: int, **fields) -> dict:
    return {
        ID_FIELD: f"C{number:05d}",
        "Account_Name": f"Customer {number}",
        "Tierline_Tier": "Regular",
        **fields,
    }


def load(connector, count: int, start: int = 0) -> list:
    results = []
    for first in range(start, start + count, 100):
        batch = [customer(n) for n in range(first, min(first + 100, start + count))]
        results.extend(connector.upsert(MODULE, batch, ID_FIELD))
    assert all(r.ok for r in results)
    return results


class FakeSleep:
    """Records the waits instead of waiting."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class RecordingSession(requests.Session):
    """A real session that remembers every Authorization header, URL and JSON body it sent."""

    def __init__(self):
        super().__init__()
        self.authorizations: list[str] = []
        self.urls: list[str] = []
        self.bodies: list = []

    def request(self, method, url, **kwargs):
        authorization = (kwargs.get("headers") or {}).get("Authorization")
        if authorization:
            self.authorizations.append(authorization)
        response = super().request(method, url, **kwargs)
        self.urls.append(response.request.url)
        if kwargs.get("json") is not None:
            self.bodies.append(kwargs["json"])
        return response
