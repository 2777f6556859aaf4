"""The legacy profile: front ends written for the Spring WebSocket back end keep working unchanged.

Envelope {"msgType": "0"|"1"|"2", "msg", "success", "data"}: "0" answers a heartbeat, "1" lists the user's
unfinished jobs (sent on open), "2" says a job finished (success true/false). Text frames starting with
"HeartBeat" get a "0"; a plain "ping" gets a plain "pong". `loginName` is trusted only in auth mode none,
or when it names the authenticated user.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from nbrelay.jobs import User
from nbrelay.models import TERMINAL_EVENTS, Event
from nbrelay.push import Push
from nbrelay.transports.session import Close, CloseCode, Session
from nbrelay.transports.ws import origin_refused, websocket_user

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def envelope(msg_type: str, msg: str, success: bool, data: Any) -> str:
    return _dumps({"msgType": msg_type, "msg": msg, "success": success, "data": data})


def heartbeat_reply() -> str:
    return envelope("0", "HeartBeat", True, None)


def unfinished_envelope(jobs: list[dict[str, Any]]) -> str:
    return envelope("1", f"{len(jobs)} unfinished job(s)", True, jobs)


def finished_envelope(event: Event) -> str:
    """msgType "2" for a terminal job event: a human message, and the job's id, report and notebook paths."""
    data = event.data
    job, notebook, state = data.get("job"), data.get("notebook", ""), data.get("state", "")
    payload = {
        "id": job,
        "jobId": job,
        "notebook": notebook,
        "state": state,
        "htmlPath": data.get("report_url"),
        "filePath": notebook,
        "notebookUrl": f"/api/jobs/{job}/notebook" if data.get("report_url") else None,
    }
    if event.type == "job.succeeded":
        seconds = data.get("duration_s") or 0
        return envelope("2", f"{notebook} finished in {seconds:.1f} s", True, payload)
    error = data.get("error") or {}
    reason = error.get("reason") or state
    detail = f": {error['ename']}: {error.get('evalue', '')}" if error.get("ename") else ""
    return envelope("2", f"{notebook} {state.replace('_', ' ')} ({reason}){detail}", False, payload)


def answer(text: str) -> str | None:
    """The reply to a client text frame: heartbeats and pings; anything else is ignored, as Spring did."""
    if text.startswith("HeartBeat"):
        return heartbeat_reply()
    if text.strip() == "ping":
        return "pong"
    return None


class LegacyConnection:
    transport = "legacy"

    def __init__(self, websocket: WebSocket, session: Session, push: Push):
        self.websocket = websocket
        self.session = session
        self.push = push
        self.subscription = push.hub.subscription()
        self.close_request: Close | None = None
        self.replies: list[str] = []

    def close_soon(self, close: Close) -> None:
        self.close_request = self.close_request or close
        self.subscription.wakeup.set()

    async def read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self.session.last_heard = time.monotonic()
                reply = answer(message.get("text") or "")
                if reply is not None:
                    self.replies.append(reply)
                    self.subscription.wakeup.set()
        except WebSocketDisconnect:
            pass
        self.close_soon(Close(1000, "peer closed"))

    async def write(self) -> int:
        subscription = self.subscription
        while True:
            while not self.replies and not subscription.queue and self.close_request is None:
                if subscription.overflowed:
                    break
                subscription.wakeup.clear()
                await subscription.wakeup.wait()
            if self.close_request is not None:
                return self.close_request.code
            while self.replies:
                await self.websocket.send_text(self.replies.pop(0))
            if subscription.overflowed:
                await self.websocket.close(CloseCode.SLOW_CONSUMER, "too slow to keep up")
                return CloseCode.SLOW_CONSUMER
            batch = list(subscription.queue)
            subscription.queue.clear()
            for event in batch:
                if event.type in TERMINAL_EVENTS and self.session.accept(event):
                    await self.websocket.send_text(finished_envelope(event))


async def legacy_user(websocket: WebSocket, push: Push) -> User | Close | None:
    """Who the connection is for: loginName counts only where the auth mode allows it."""
    login = websocket.query_params.get("loginName")
    user = await websocket_user(websocket, push)
    if push.settings.auth_mode == "none" or user is None:
        return user
    if login and login != user.name:
        return Close(CloseCode.FORBIDDEN, "loginName is not the logged-in user")
    return user


async def serve_legacy(websocket: WebSocket, push: Push) -> None:
    if origin_refused(websocket, push):
        await websocket.close(code=1008)  # before accept: HTTP 403
        return
    who = await legacy_user(websocket, push)
    await websocket.accept()
    if who is None or isinstance(who, Close):
        close = who or Close(CloseCode.UNAUTHORIZED, "unauthorized: log in, or pass ?token=")
        await websocket.close(close.code, close.reason)
        return
    user = who
    refusal = push.admit(user)
    if refusal is not None:
        await websocket.close(refusal.code, refusal.reason)
        return
    settings = push.settings
    session = Session(user, heartbeat_s=settings.heartbeat_s, idle_timeout_s=settings.client_idle_timeout_s)
    connection = LegacyConnection(websocket, session, push)
    stream = f"user:{user.name}"
    session.positions[stream] = (None, 0)
    push.hub.subscribe(connection.subscription, stream)  # before the list: no finish falls between the two
    push.add(connection)
    code: int | None = None
    reader: asyncio.Task[None] | None = None
    try:
        await websocket.send_text(unfinished_envelope(await push.snapshot(user)))
        reader = asyncio.create_task(connection.read())
        code = await connection.write()
        if connection.close_request is not None and code != 1000:
            await websocket.close(code, connection.close_request.reason)
    except (WebSocketDisconnect, OSError, RuntimeError):
        code = 1006
    finally:
        if reader is not None:
            reader.cancel()
        push.hub.unsubscribe(connection.subscription)
        push.remove(connection, code)
