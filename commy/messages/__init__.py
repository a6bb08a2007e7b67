"""Every typed message commy exchanges, in one place: this package, one module per protocol.

`base` holds the machinery (the registry, `@message`, the envelope, shared records); `peer` the
link and server-to-server protocol (tags 1-49); `client` the client protocol over WebSocket
(100-199); `local` the timers and events that never leave a node (1000+). Importing
`commy.messages` registers them all, and everything is re-exported here.
"""

from commy.messages.base import *  # noqa: F403
from commy.messages.client import *  # noqa: F403
from commy.messages.cluster import *  # noqa: F403
from commy.messages.local import *  # noqa: F403
from commy.messages.peer import *  # noqa: F403
