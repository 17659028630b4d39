"""Data shapes of the backend: the `users` table and the JSON bodies of the users API."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 255


class Base(DeclarativeBase):
    """Declarative base for the backend's tables."""


def _utc_now() -> datetime:
    # Naive UTC: the DATETIME column keeps no zone, and UserOut adds it back.
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(Base):
    """A row of the `users` table."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), nullable=False)
    email: Mapped[str] = mapped_column(
        String(EMAIL_MAX_LENGTH), nullable=False, unique=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=_utc_now)


class UserCreate(BaseModel):
    """Body of POST /users."""

    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH)
    # A light check instead of EmailStr, which would pull in email-validator.
    email: str = Field(min_length=3, max_length=EMAIL_MAX_LENGTH, pattern=r"^[^@\s]+@[^@\s]+$")

    @field_validator("name", "email", mode="before")
    @classmethod
    def strip_whitespace(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("email")
    @classmethod
    def lower_case_email(cls, value: str) -> str:
        # Addresses differing only in case reach the same mailbox in practice, so they
        # count as duplicates.
        return value.lower()


class UserOut(BaseModel):
    """A user as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def mark_as_utc(cls, value: datetime) -> datetime:
        # MySQL DATETIME and SQLite keep no zone; the value was stored in UTC, so say so
        # and browsers show it in their own local time correctly.
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
