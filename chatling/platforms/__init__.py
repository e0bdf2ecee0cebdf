"""The chat platforms the bot posts to: Twitch (EventSub in, Helix out) and Discord ``/chat``."""
