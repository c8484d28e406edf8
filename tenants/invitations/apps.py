from django.apps import AppConfig


class InvitationsConfig(AppConfig):
    # Public schema only: an invitation is found by its token before any organization is entered,
    # and accepting it creates a user and a membership, which live in public too.
    name = "tenants.invitations"
    label = "invitations"
    verbose_name = "Invitations"
    default_auto_field = "django.db.models.BigAutoField"
