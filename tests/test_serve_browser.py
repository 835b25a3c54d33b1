"""The web page of `s2s serve` in a real headless browser (Debian's Chromium driven by playwright): type a text,
pick a model, submit, and read the rendered translation, highlighted entities and sentiment with its probability.
.ci/run installs Chromium when it is missing; without it (or playwright) the test skips, saying which is missing."""
from __future__ import annotations

import shutil

import pytest
from test_serve import free_port, start_server, wait_until_up
from test_serve_runs import classification_run, tagging_run  # noqa: F401  (fixtures)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


@pytest.fixture(scope="module")
def server(trained_run, tagging_run, classification_run):  # noqa: F811
    port = free_port()
    proc = start_server([trained_run, tagging_run, classification_run], port)
    try:
        wait_until_up(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH: apt-get install -y chromium (.ci/run does)")
def test_the_page_translates_tags_and_classifies_in_a_browser(server):
    import httpx

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.wait_for_selector("#task option", state="attached")
            models = {m["task"]: m["name"] for m in httpx.get(server + "/models").json()["models"]}

            def submit(task: str, text: str, selector: str) -> None:
                page.select_option("#task", models[task])
                page.fill("#text", text)
                page.click("#submit")
                page.wait_for_selector("#status:text('done')")
                page.wait_for_selector(selector)

            source = "der hund sieht ein ball"
            submit("translation", source, "#result .translation")
            expected = httpx.post(server + "/translate", json={"texts": [source]}).json()["translations"][0]
            assert page.inner_text("#result .translation") == expected.strip()  # HTML drops trailing spaces

            text = "Alan Shearer visited Paris ."
            submit("tagging", text, "#result .record")
            entities = httpx.post(server + "/tag", json={"texts": [text]}).json()["records"][0]["entities"]
            marks = page.query_selector_all("#result mark.entity")
            assert [(m.inner_text(), m.get_attribute("data-type")) for m in marks] == [(e["text"], e["type"]) for e in entities]
            assert entities  # the tiny tagger finds the template's names
            assert page.inner_text("#result .record").startswith("Alan")

            review = "the movie was great"
            submit("classification", review, "#result .prediction")
            found = httpx.post(server + "/classify", json={"texts": [review]}).json()["predictions"][0]
            assert page.inner_text("#result .label") == found["label"]
            assert page.inner_text("#result .prob") == f"{100 * found['prob']:.1f}%"
        finally:
            browser.close()
