"""The commy client SDK: async (`AsyncClient`) and blocking (`Client`), remote and locally mapped.

    client = await AsyncClient.connect("ws://127.0.0.1:8765")
    await client.authenticate("acme", api_key="ck_...")
    svc = client.service("acme", "prices")          # mapped when the server allows it, else remote
    await svc.set_float("eurusd", 1.0841)
    async for change in svc.subscribe(["eurusd"]):
        ...

`connection` is the wire (request ids, events, heartbeats, reconnection), `aio` the async API,
`sync` its blocking twin on a background loop thread, `local` the mapped fast path, `types`
sessions, subscriptions, errors and the typed value encodings, `admin_cli` the `commy admin`
command. The SDK speaks only the client protocol (`commy.messages.client`, `commy.client_codec`).
"""

from commy.client.aio import AsyncClient
from commy.client.connection import Connection
from commy.client.local import Service
from commy.client.sync import Client, SyncService, SyncSubscription
from commy.client.types import (
    BadRequestError,
    CommyClientError,
    ConnectionLostError,
    ExpiredError,
    ForbiddenError,
    NotFoundError,
    NotLocalError,
    PermissionRevokedError,
    RateLimitedError,
    RequestTimeoutError,
    Session,
    Subscription,
    TooLargeError,
    UnauthenticatedError,
    ValueTypeError,
    decode_float,
    decode_int,
    decode_object,
    decode_str,
    encode_float,
    encode_int,
    encode_object,
    encode_str,
)
from commy.messages import VariableChanged, VariableValue

__all__ = [
    "AsyncClient", "BadRequestError", "Client", "CommyClientError", "Connection", "ConnectionLostError",
    "ExpiredError", "ForbiddenError", "NotFoundError", "NotLocalError", "PermissionRevokedError",
    "RateLimitedError", "RequestTimeoutError", "Service", "Session", "Subscription", "SyncService",
    "SyncSubscription", "TooLargeError", "UnauthenticatedError", "ValueTypeError", "VariableChanged",
    "VariableValue", "decode_float", "decode_int", "decode_object", "decode_str", "encode_float", "encode_int",
    "encode_object", "encode_str",
]
