"""The upload form and actions shared by the system and tenant plugin admins."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from cadence_site.errors import ApplicationError
from plugins import services
from plugins.archive import MAX_PACKAGE_BYTES


class UploadForm(forms.ModelForm):
    """Upload is the only way a version comes to exist: the package is checked and stored by the
    same service as the REST upload, and its errors (every manifest issue) shown on the form."""

    package = forms.FileField(help_text=f"A plugin ZIP (at most {MAX_PACKAGE_BYTES // 2**20} MB).")

    class Meta:
        fields: tuple = ()

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("package")
        if upload is None:
            return cleaned
        if upload.size > MAX_PACKAGE_BYTES:
            self.add_error("package", f"The package exceeds {MAX_PACKAGE_BYTES} bytes.")
            return cleaned
        try:
            self.uploaded, self.created = services.plugin_upload(
                raw=upload.read(), uploaded_by=str(self.uploader), actor=self.uploader
            )
        except ApplicationError as exc:
            issues = exc.extra.get("issues", []) if isinstance(exc.extra, dict) else []
            self.add_error("package", exc.message)
            for issue in issues[1:20]:
                self.add_error("package", f"{issue['path'] or '/'}: {issue['message']}")
        return cleaned


class PluginVersionAdminMixin:
    list_display = ("plugin_id", "version", "name", "status", "size", "uploaded_by", "created_at")
    list_filter = ("status",)
    search_fields = ("plugin_id", "name")
    readonly_fields = (
        "plugin_id",
        "version",
        "name",
        "description",
        "status",
        "sha256",
        "size",
        "storage_key",
        "capabilities",
        "capability_diff",
        "manifest",
        "uploaded_by",
        "approved_by",
        "created_at",
    )
    actions = ("enable", "disable", "deprecate", "approve")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            form = super().get_form(request, obj, change, form=UploadForm, fields=("package",))
            form.uploader = request.user
            return form
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ("package",) if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # versions are immutable; status changes go through the actions
        row = form.uploaded
        obj.__dict__.update({k: v for k, v in row.__dict__.items() if not k.startswith("_")})
        if not form.created:
            messages.info(request, "This exact package was already uploaded.")
        elif row.status == "pending_approval":
            messages.warning(
                request, "This version widens the plugin's capabilities: approve it to use it."
            )

    def has_change_permission(self, request, obj=None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a published version stays; disable it instead

    def _transition(self, request, queryset, action: str):
        for row in queryset:
            try:
                services.plugin_version_transition(row=row, action=action, actor=request.user)
            except ApplicationError as exc:
                messages.error(request, f"{row}: {exc.message}")

    @admin.action(description="Enable selected versions", permissions=["change"])
    def enable(self, request, queryset):
        self._transition(request, queryset, "enable")

    @admin.action(description="Disable selected versions", permissions=["change"])
    def disable(self, request, queryset):
        self._transition(request, queryset, "disable")

    @admin.action(description="Deprecate selected versions", permissions=["change"])
    def deprecate(self, request, queryset):
        self._transition(request, queryset, "deprecate")

    @admin.action(
        description="Approve selected versions (widened capabilities)", permissions=["change"]
    )
    def approve(self, request, queryset):
        self._transition(request, queryset, "approve")
