"""The request and response bodies of the account routes, and the field types they share.

Request bodies are strict (:class:`StrictBody`: unknown fields 422, no type
coercion, SEC-48/51); responses carry only their declared fields (SEC-49).
Password fields carry the policy's lengths in the schema (``keel.api.contract``).
Used by :mod:`keel.api.accounts`, :mod:`keel.api.passwords` and
:mod:`keel.api.admin_users`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from keel.accounts import UserView
from keel.accounts.email import EMAIL_MAX_LENGTH
from keel.accounts.models import DISPLAY_NAME_MAX
from keel.api.contract import LIMIT_KEY, NEW_PASSWORD, PASSWORD, PASSWORD_FIELD_MAX

__all__ = [
    "AcceptedResponse",
    "DeleteMeRequest",
    "DisplayName",
    "Email",
    "LoginRequest",
    "LookupEmail",
    "NewPassword",
    "OAuthTokenResponse",
    "Password",
    "RegisterRequest",
    "StrictBody",
    "TokenResponse",
    "UpdateMeRequest",
    "UserResponse",
    "VerifiedResponse",
    "VerifyEmailRequest",
]

_TOKEN_FIELD_MAX: Final = 128

#: A password the caller already has (login, re-authentication): any the policy once allowed.
Password = Annotated[
    SecretStr,
    Field(min_length=1, max_length=PASSWORD_FIELD_MAX, json_schema_extra={LIMIT_KEY: PASSWORD}),
]
#: A password being set: its schema carries the policy's lengths (``keel.api.contract``).
NewPassword = Annotated[
    SecretStr,
    Field(min_length=1, max_length=PASSWORD_FIELD_MAX, json_schema_extra={LIMIT_KEY: NEW_PASSWORD}),
]
Email = Annotated[
    str,
    Field(min_length=1, max_length=EMAIL_MAX_LENGTH, json_schema_extra={"format": "email"}),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=DISPLAY_NAME_MAX)]
#: An address only looked up, never stored (a malformed one gets the same answer as any).
LookupEmail = Annotated[str, Field(min_length=1, max_length=EMAIL_MAX_LENGTH)]


class StrictBody(BaseModel):
    """A request body: unknown fields are refused, values are not coerced."""

    # SEC-48/51: unknown fields are refused (no mass assignment), no type coercion.
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterRequest(StrictBody):
    email: Email
    password: NewPassword
    display_name: DisplayName | None = None


class VerifyEmailRequest(StrictBody):
    token: Annotated[str, Field(min_length=1, max_length=_TOKEN_FIELD_MAX)]


class LoginRequest(StrictBody):
    email: Email
    password: Password


def _update_me_schema(schema: dict[str, Any]) -> None:
    # What the validator and the service require: a change, and the password with a new address.
    properties = schema["properties"]
    properties["email"] = next(s for s in properties["email"]["anyOf"] if s.get("type") != "null")
    schema["anyOf"] = [
        {"required": ["display_name"], "not": {"required": ["email"]}},
        {"required": ["email", "current_password"], "properties": {"current_password": _STRING}},
    ]


_STRING: Final = {"type": "string"}


class UpdateMeRequest(StrictBody):
    """Only these fields; roles, activity, verification and the hash are never settable."""

    model_config = ConfigDict(json_schema_extra=_update_me_schema)

    display_name: DisplayName | None = None
    email: Email | None = None
    current_password: Password | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateMeRequest:
        if not {"display_name", "email"} & self.model_fields_set:
            raise ValueError("give display_name or email")
        if "email" in self.model_fields_set and self.email is None:
            raise ValueError("email cannot be removed")
        return self


class DeleteMeRequest(StrictBody):
    password: Password


class AcceptedResponse(BaseModel):
    status: Literal["accepted"]
    detail: str


class VerifiedResponse(BaseModel):
    status: Literal["verified"]


class TokenResponse(BaseModel):
    """RFC 6749 §5.1; ``refresh_token`` when sessions are installed."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str | None = None


class OAuthTokenResponse(TokenResponse):
    """RFC 6749 §5.1; ``scope`` only when the request named one (§3.3)."""

    scope: str | None = None


class UserResponse(BaseModel):
    """The account as its owner sees it (declared fields only, SEC-49)."""

    id: str
    email: str
    email_verified: bool
    display_name: str | None
    roles: list[str]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, view: UserView) -> UserResponse:
        return cls(
            id=view.id,
            email=view.email,
            email_verified=view.email_verified,
            display_name=view.display_name,
            roles=list(view.roles),
            created_at=view.created_at.isoformat(),
            updated_at=view.updated_at.isoformat(),
        )
