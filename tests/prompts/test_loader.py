import pytest

from kecpm.errors import KecpmError
from kecpm.prompts import TemplateNotFound, list_templates, load_template

TEMPLATE = """name = "{name}"
version = {version}
description = "test"
[[messages]]
role = "system"
content = "You label posts. {{{{not a variable}}}}"
[[messages]]
role = "human"
content = "Text: {{text}}\\nImage: {{caption}}"
"""


def _write(folder, name, version, text=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.v{version}.toml"
    path.write_text(text if text is not None else TEMPLATE.format(name=name, version=version))
    return path


def test_highest_version_by_default_and_explicit_versions(tmp_path):
    _write(tmp_path, "probe", 1)
    _write(tmp_path, "probe", 3)
    assert load_template("probe", search_dirs=[tmp_path]).version == 3
    assert load_template("probe", 1, search_dirs=[tmp_path]).ref == "probe@v1"
    assert load_template("probe@v1", search_dirs=[tmp_path]).version == 1


def test_variables_formatting_and_chat_prompt(tmp_path):
    _write(tmp_path, "probe", 1)
    template = load_template("probe", search_dirs=[tmp_path])
    assert template.input_variables == ["text", "caption"]
    messages = template.format_messages(text="hi {there}", caption="a dog")
    assert messages[0] == ("system", "You label posts. {not a variable}")
    assert messages[1] == ("human", "Text: hi {there}\nImage: a dog")
    with pytest.raises(KeyError, match="caption"):
        template.format_text(text="x")
    rendered = template.chat_prompt().format_messages(text="t", caption="c")
    assert rendered[1].content == "Text: t\nImage: c"


def test_user_directory_overrides_and_environment(tmp_path, monkeypatch):
    mine, env = tmp_path / "mine", tmp_path / "env"
    _write(env, "probe", 1, TEMPLATE.format(name="probe", version=1).replace("test", "from env"))
    monkeypatch.setenv("KECPM_PROMPTS_DIR", str(env))
    assert load_template("probe").description == "from env"
    _write(mine, "probe", 1, TEMPLATE.format(name="probe", version=1).replace("test", "mine"))
    assert load_template("probe", search_dirs=[mine]).description == "mine"
    assert [t.description for t in list_templates([mine]) if t.name == "probe"] == ["mine"]


def test_missing_and_broken_templates(tmp_path):
    with pytest.raises(TemplateNotFound, match="nothing@v2"):
        load_template("nothing", 2, search_dirs=[tmp_path])
    _write(tmp_path, "broken", 1, "name = 'broken'\nversion = 1\n")
    with pytest.raises(KecpmError, match="not a valid prompt template"):
        load_template("broken", search_dirs=[tmp_path])
    _write(tmp_path, "liar", 2, TEMPLATE.format(name="other", version=2))
    with pytest.raises(KecpmError, match="declares other@v2"):
        load_template("liar", search_dirs=[tmp_path])
