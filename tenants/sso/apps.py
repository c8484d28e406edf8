from django.apps import AppConfig


class SsoConfig(AppConfig):
    # Public schema only: the password login page (global, before any organization is entered)
    # asks whether any of a user's organizations requires single sign-on, and a sign-in creates
    # users and memberships, which live in public too.
    name = "tenants.sso"
    label = "sso"
    verbose_name = "Single sign-on"
    default_auto_field = "django.db.models.BigAutoField"
