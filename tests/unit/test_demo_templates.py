"""Which templates folder holds the demo company's letters (refused over SMTP to real people)."""

from __future__ import annotations

import shutil

from mailmatrix import local

DEMO_SENDER = 'sender: "Acme Talent <talent@example.com>"'


def test_the_bundled_folder_is_the_demo_until_its_sender_is_made_ones_own(tmp_path, monkeypatch):
    # GIVEN the bundled folder (a copy standing in for it)
    bundled = tmp_path / "templates"
    shutil.copytree(local.DEFAULT_TEMPLATES, bundled)
    monkeypatch.setattr(local, "DEFAULT_TEMPLATES", bundled)
    manifest = bundled / "manifest.yaml"
    assert DEMO_SENDER in manifest.read_text(encoding="utf-8")

    # THEN as shipped it is the demo, and so is a copy of it left as it is (Markdown and
    # hidden files aside); a copy with any template file changed is not, whatever its sender
    assert local.is_demo(bundled)
    other = tmp_path / "mine"
    shutil.copytree(bundled, other)
    (other / "README.md").write_text("my notes", encoding="utf-8")
    (other / ".DS_Store").write_bytes(b"\0")
    assert local.is_demo(other)
    subject = other / "offer" / "subject.txt"
    subject.write_text(subject.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert not local.is_demo(other)

    # WHEN its sender is made one's own in place (as the AWS set-up has one do)
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace(DEMO_SENDER, 'sender: "HR <hr@acme.io>"'), encoding="utf-8")

    # THEN it is no longer the demo
    assert not local.is_demo(bundled)

    # AND a manifest without a sender, or one that does not read, keeps the guard on
    manifest.write_text(text.replace(DEMO_SENDER, ""), encoding="utf-8")
    assert local.is_demo(bundled)
    manifest.write_bytes(b"\xff\xfe not yaml")
    assert local.is_demo(bundled)
