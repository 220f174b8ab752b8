"""How a result comes back: the channel protocol, the inbox, the object store.

May import: `flyjobs._wire`, `flyjobs._aio.bridge`, `flyjobs._settings`. No isinstance on a channel
outside this package.
"""
