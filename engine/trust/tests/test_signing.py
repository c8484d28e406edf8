"""Ed25519 keys in the C2SP signed-note form, checked against Go's sumdb/note published example."""

from __future__ import annotations

import pytest

from engine.trust import signing
from engine.trust.verify_bundle import VerifierKey, VerifyError, open_note, split_notes

GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_signing_reproduces_the_go_reference_note_byte_for_byte():
    signer = signing.Signer.parse(GO_SIGNER)
    assert str(signer.verifier) == GO_VERIFIER
    assert signer.sign_note(GO_TEXT) == GO_NOTE
    assert signer.serialize() == GO_SIGNER


def test_the_reference_note_opens_and_a_changed_one_does_not():
    key = VerifierKey.parse(GO_VERIFIER)
    assert open_note(GO_NOTE, [key]) == (GO_TEXT, [key])
    with pytest.raises(VerifyError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [key])
    other = signing.Signer.generate("PeterNeumann").verifier
    with pytest.raises(VerifyError, match="no signature by a trusted key"):
        open_note(GO_NOTE, [other])


@pytest.mark.parametrize(
    "bad",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+c74f20a3+AhpczQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong type
        "PeterNeumann+c74f20a3",
        "not a key",
    ],
)
def test_malformed_verifier_keys_are_refused(bad):
    with pytest.raises(VerifyError):
        VerifierKey.parse(bad)


def test_rotation_keeps_old_keys_verifying(settings, tmp_path):
    settings.CADENCE_SIGNING_KEYS = ""
    settings.VAR_DIR = tmp_path
    first = signing.keyring().current
    assert (tmp_path / "signing_keys").stat().st_mode & 0o777 == 0o600
    note = first.sign_note("hello\n")
    second = signing.rotate()
    ring = signing.keyring()
    assert ring.current.key_id == second.key_id != first.key_id
    assert [s.key_id for s in ring.signers] == [second.key_id, first.key_id]
    assert open_note(note, ring.verifiers)[0] == "hello\n"


def test_a_retired_public_key_still_verifies(settings, tmp_path):
    old = signing.Signer.generate("cadence.test/proofs")
    settings.CADENCE_SIGNING_RETIRED_KEYS = str(old.verifier)
    note = old.sign_note("from before\n")
    assert open_note(note, signing.keyring().verifiers)[0] == "from before\n"


def test_witness_files_split_into_their_notes():
    signer = signing.Signer.generate("w")
    notes = [signer.sign_note(f"origin\n{i}\nAAAA\n") for i in range(3)]
    assert split_notes("\n".join(notes)) == notes
    assert split_notes("".join(notes)) == notes


def test_the_rotate_command_prints_every_verifier_key(settings, tmp_path, capsys):
    from django.core.management import call_command

    settings.CADENCE_SIGNING_KEYS = ""
    settings.VAR_DIR = tmp_path
    call_command("signing_key_rotate", "--show")
    before = capsys.readouterr().out.splitlines()
    call_command("signing_key_rotate")
    after = capsys.readouterr().out.splitlines()
    assert len(before) == 1 and len(after) == 2 and after[1] == before[0]
    assert VerifierKey.parse(after[0]).id == signing.keyring().current.key_id
