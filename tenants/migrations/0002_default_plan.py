from django.db import migrations


def create_default_plan(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    Plan.objects.get_or_create(slug="default", defaults={"name": "Default"})


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunPython(create_default_plan, migrations.RunPython.noop)]
