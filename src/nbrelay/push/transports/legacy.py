"""The legacy profile: front ends written for the Spring WebSocket back end keep working unchanged.

Envelope {"msgType": "0"|"1"|"2", "msg", "success", "data"}: "0" answers a heartbeat, "1" lists the user's
unfinished jobs (sent on open), "2" says a job finished (success true/false). Text frames starting with
"HeartBeat" get a "0"; a plain "ping" gets a plain "pong". `loginName` is trusted only in auth mode none,
or when it names the authenticated user.
"""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket

from nbrelay.jobs import User
from nbrelay.models import TERMINAL_EVENTS, Event, compact_json
from nbrelay.push.transports.link import open_session
from nbrelay.push.transports.port import PushPort
from nbrelay.push.transports.session import Close, CloseCode, Send
from nbrelay.push.transports.ws import WebSocketConnection, origin_refused, run_connection, websocket_user


def envelope(msg_type: str, msg: str, success: bool, data: Any) -> str:
    return compact_json({"msgType": msg_type, "msg": msg, "success": success, "data": data})


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


class LegacyConnection(WebSocketConnection):
    """The v1 connection with the Spring envelope: text heartbeats answered, terminal job events as "2"."""

    transport = "legacy"

    def on_text(self, text: str) -> None:
        refused = self.session.heard()  # the flood limit of every profile (long frames are ignored, as Spring did)
        if refused is not None:
            self.close_soon(refused)
            return
        reply = answer(text)
        if reply is not None:
            self.control.append(reply)

    def frame(self, event: Event) -> str | None:
        return finished_envelope(event) if event.type in TERMINAL_EVENTS else None

    async def history_lost(self, notice: Send) -> None:
        """The user's stream lost its history (its broker restarted empty): what the page holds may be stale,
        so send the unfinished jobs again, as on open (the envelope has no other way to say it)."""
        await self.websocket.send_text(unfinished_envelope(await self.push.snapshot(self.session.user)))


async def legacy_user(websocket: WebSocket, push: PushPort) -> User | Close | None:
    """Who the connection is for: loginName counts only where the auth mode allows it."""
    login = websocket.query_params.get("loginName")
    user = await websocket_user(websocket, push)
    if push.settings.auth_mode == "none" or user is None:
        return user
    if login and login != user.name:
        return Close(CloseCode.FORBIDDEN, "loginName is not the logged-in user")
    return user


async def serve_legacy(websocket: WebSocket, push: PushPort) -> None:
    if origin_refused(websocket, push):
        await websocket.close(code=1008)  # before accept: HTTP 403
        return
    who = await legacy_user(websocket, push)
    await websocket.accept()
    session = who if isinstance(who, Close) else open_session(push, who)
    if isinstance(session, Close):
        await websocket.close(session.code, session.reason)
        return
    user = session.user
    connection = LegacyConnection(websocket, session, push)
    stream = f"user:{user.name}"
    session.positions[stream] = (None, 0)

    async def opening() -> None:
        await push.hub.follow(connection.subscription, stream)  # before the list: no finish falls between
        await websocket.send_text(unfinished_envelope(await push.snapshot(user)))

    await run_connection(connection, opening)
