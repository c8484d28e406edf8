from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat.orphans import REPLIES, reply_heartbeat
        from engine.runs.orphans import source_register
        from engine.runs.pipeline import register

        # A reply's text so far and its owner's heartbeat; replies whose owner is gone are swept
        # before runs (engine/runs/orphans.py), so a run ends as its reply did.
        register(reply_heartbeat)
        source_register(REPLIES)
