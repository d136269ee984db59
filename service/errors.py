"""One error hierarchy for the service; the API renders each as RFC 9457 problem details."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the session's type only: errors stay importable without a database
    from sqlalchemy.orm import Session

M = TypeVar("M")


class CaviarError(Exception):
    """Something went wrong."""

    status: int = 500
    slug: str = "internal"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        self.extra = extra
        # Response headers the problem carries (Retry-After on 429, say).
        self.headers = headers or {}
        super().__init__(self.detail)

    @property
    def title(self) -> str:
        return (type(self).__doc__ or "").strip().rstrip(".")


class NotFound(CaviarError):
    """Not found."""

    status = 404
    slug = "not-found"


# How a "does not exist" message names a model whose class name is not its noun.
_NOUNS = {"Dataset": "data set"}


def not_found(model: type[Any], ident: Any) -> NotFound:
    """The NotFound for a missing row: "study 7 does not exist"."""
    noun = _NOUNS.get(model.__name__, model.__name__.lower())
    return NotFound(f"{noun} {ident} does not exist")


def get_or_404(session: Session, model: type[M], ident: Any) -> M:
    """The `model` row with primary key `ident`, or NotFound naming the model."""
    row = session.get(model, ident)
    if row is None:
        raise not_found(model, ident)
    return row


class Conflict(CaviarError):
    """The resource is not in a state that allows this."""

    status = 409
    slug = "conflict"


class LeaseLost(Conflict):
    """The worker's lease on this trial is no longer valid."""

    slug = "lease-lost"


class InvalidSpec(CaviarError):
    """The search spec is invalid."""

    status = 422
    slug = "invalid-spec"

    def __init__(self, detail: str | None = None, *, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail or "; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        self.extra = {"errors": errors}

    @classmethod
    def at(cls, loc: str, msg: str, value: Any = None) -> InvalidSpec:
        """The error of one field: where it is, what is wrong, and the value given."""
        return cls(errors=[{"loc": loc, "msg": msg, "input": value}])


class InvalidDataset(CaviarError):
    """The uploaded data set cannot be used."""

    status = 422
    slug = "invalid-dataset"


class PayloadTooLarge(CaviarError):
    """The request body is larger than this service accepts."""

    status = 413
    slug = "payload-too-large"


class RateLimited(CaviarError):
    """Too many submissions; retry after the time the Retry-After header gives."""

    status = 429
    slug = "rate-limited"


class Unauthorized(CaviarError):
    """A valid API token is required."""

    status = 401
    slug = "unauthorized"


class Forbidden(CaviarError):
    """The token does not have the scope this route needs."""

    status = 403
    slug = "forbidden"


class Unavailable(CaviarError):
    """The database is unreachable; try again shortly."""

    status = 503
    slug = "unavailable"
