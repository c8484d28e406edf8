"""A proof is written with its run and taken into the log just after the run's commit
(engine/trust/log.log_sequence): its log index is NULL until then, and set once.

Proof rows stay append-only but for that one change: the trigger on trust_executionproof lets an
UPDATE through only when it sets a NULL log_index and changes nothing else.
"""

from django.db import migrations, models

SEQUENCE_ONCE = """
CREATE FUNCTION trust_proof_sequence_once() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.log_index IS NULL AND NEW.log_index IS NOT NULL
     AND (NEW.id, NEW.run_id, NEW.canonical, NEW.payload, NEW.digest, NEW.signature,
          NEW.key_name, NEW.key_id, NEW.created_at)
         IS NOT DISTINCT FROM
         (OLD.id, OLD.run_id, OLD.canonical, OLD.payload, OLD.digest, OLD.signature,
          OLD.key_name, OLD.key_id, OLD.created_at) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'rows of % are append-only (% refused)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'integrity_constraint_violation';
END
$body$;
DROP TRIGGER IF EXISTS trust_executionproof_append_only ON trust_executionproof;
CREATE TRIGGER trust_executionproof_append_only BEFORE UPDATE OR DELETE ON trust_executionproof
  FOR EACH ROW EXECUTE FUNCTION trust_proof_sequence_once();
"""

APPEND_ONLY = """
DROP TRIGGER IF EXISTS trust_executionproof_append_only ON trust_executionproof;
CREATE TRIGGER trust_executionproof_append_only BEFORE UPDATE OR DELETE ON trust_executionproof
  FOR EACH ROW EXECUTE FUNCTION trust_refuse_change();
DROP FUNCTION IF EXISTS trust_proof_sequence_once();
"""


class Migration(migrations.Migration):
    dependencies = [("trust", "0002_append_only")]

    operations = [
        migrations.AlterField(
            model_name="executionproof",
            name="log_index",
            field=models.BigIntegerField(null=True, unique=True),
        ),
        migrations.AddIndex(
            model_name="executionproof",
            index=models.Index(
                condition=models.Q(log_index__isnull=True),
                fields=["created_at", "id"],
                name="proof_unsequenced",
            ),
        ),
        migrations.RunSQL(SEQUENCE_ONCE, APPEND_ONLY),
    ]
