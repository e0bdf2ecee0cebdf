"""Live Twitch: chat in over EventSub, replies out through Helix, moderators' commands.

- ``client.TwitchChat``: the ``async with`` lifetime of one channel (inbox in, ``.sink`` out).
- ``sink.TwitchSink``: ``chatling.sinks.ChatSink`` over Helix ``POST /chat/messages``.
- ``commands.ModeratorCommands``: ``!chatling pause|resume|status`` for mods and the broadcaster.
- ``auth``: ``chatling auth twitch`` (device-code login), refresh, the 0600 token file.

Import ``chatling.platforms.twitch.client`` only where Twitch is used: it imports twitchio.
"""
