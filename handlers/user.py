"""Retrieve the current User: remembered on first call, kept up to date with the token's claims."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from nico_api import db, models, schemas
from nico_api.auth import Caller
from nico_api.validation import RequestProblems, Step


async def get_user(org: str, token_info: dict[str, Any], problems: RequestProblems) -> schemas.User:
    problems.check(Step.QUERY)
    caller: Caller = token_info["caller"]
    caller.require_member(org.lower())
    return await db.run(_remember_once_more_on_conflict, caller)


def _remember_once_more_on_conflict(caller: Caller) -> schemas.User:
    try:
        return _remember(caller)
    except IntegrityError:
        # A concurrent first call created the same user; this one now finds it.
        return _remember(caller)


def _remember(caller: Caller) -> schemas.User:
    with db.transaction() as session:
        user = session.get(models.User, caller.user_id)
        if user is None:
            now = models.utcnow()
            user = models.User(
                id=caller.user_id,
                issuer=caller.issuer,
                subject=caller.subject,
                created=now,
                updated=now,
            )
            session.add(user)
        # Unchanged values make no UPDATE, so `updated` moves only when the claims change.
        for column, value in caller.profile().items():
            setattr(user, column, value)
        session.flush()
        return schemas.User.from_record(user)
