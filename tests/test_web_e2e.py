"""The page in a real headless Chromium: the library as a timeline before any query (page by page as it
scrolls), a query, the detail view (only the element for the item's kind visible, ←/→, Esc), paste to search by
image, the duplicates page, a phone-sized viewport without sideways scrolling, thumbnails loaded near the screen,
jumping to a month, selecting photos, and weak matches folded away. Screenshots of each view go to
test-artifacts/ for a person to look at."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import SAMPLE_ROWS
from tests.helpers import eventually, sample_image, write_video

TOKEN = "e2e-browser-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(cli, library_dir: Path, photos, tmp_path: Path, shapes: Path):
    """24 photos, one a copy of another, and a video, tagged; captions; served as `clipdex serve` does, with a
    token."""
    import uvicorn

    from clipdex.cli.web import create_app
    from clipdex.cli.web_security import sign_in_url
    from clipdex.retrieval.library import Library

    ARTIFACTS.mkdir(exist_ok=True)  # screenshots for people to look at
    folder = photos(24)
    shutil.copy(sorted(folder.iterdir())[2], folder / "copy-of-a-photo.png")
    for n, photo in enumerate(sorted(folder.iterdir())):  # taken over eight months, about three a month
        when = time.time() - 86400 * (10 * n + 1)
        os.utime(photo, (when, when))
    write_video(folder / "clip.mp4", [(sample_image(7), 3), (sample_image(8), 3)])
    cli("index", folder, "--model", "sample", "--tags", "--vocabulary", shapes)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(row["caption"] for row in SAMPLE_ROWS[:24]) + "\n")
    cli("add-captions", corpus)
    port = _free_port()
    app = create_app(Library(library_dir), "cpu", token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert eventually(lambda: server.started, 30)
    yield sign_in_url(f"http://127.0.0.1:{port}", TOKEN)  # what `clipdex serve` prints
    server.should_exit = True
    thread.join(timeout=10)


def _signed_in(browser, server: str, **options):
    page = browser.new_page(**options)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server)  # signs in (a cookie), then lands on the page
    return page, problems


# Every wait below is for a state of the page, never for a time: a busy machine only makes it come later.
_SETTLED = ("() => !state.loading && (state.done || $('more').getBoundingClientRect().top >= innerHeight + 400)")
_NEAR_ASKED = ("() => [...document.querySelectorAll('#timeline .thumb img')].every(i => i.hasAttribute('src') || "
               "i.getBoundingClientRect().top > innerHeight + 300) && [...document.querySelectorAll("
               "'#timeline .thumb img[src]')].every(i => i.complete)")  # (asked for near the screen, and answered)


def _visible_thumbs_loaded(page, selector: str) -> None:
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{selector} .thumb img')].filter(i => i.checkVisibility()).slice(0, 4)"
        ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)  # (the first shown: weak ones are folded)


@pytest.mark.slow
def test_home_timeline_query_and_detail_view(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 400})
    page.goto(server.split("/login")[0] + "/?page=3")  # three files a request: scrolling must load the rest
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.wait_for_function(_SETTLED, timeout=15_000)  # the screen filled, nothing more asked for
    first_pages = page.locator("#timeline .thumb").count()
    assert first_pages < 26 and first_pages % 3 == 0  # what fills the screen, a page at a time
    assert "25 photos · 1 video" in page.locator("#hint").inner_text()
    assert page.locator("#timeline .month h2").count() >= 1
    _visible_thumbs_loaded(page, "#timeline")
    page.screenshot(path=str(ARTIFACTS / "web-home.png"))
    for _ in range(20):
        page.mouse.wheel(0, 5000)
        page.wait_for_function(_SETTLED, timeout=15_000)
        if page.locator("#timeline .thumb").count() == 26:
            break
    expect(page.locator("#timeline .thumb")).to_have_count(26)  # every file once: 25 photos and the video

    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.fill("#q", "a red circle")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .thumb img", timeout=15_000)
    assert page.locator("#timeline").is_hidden() and page.locator("#results .thumb").count() >= 10
    _visible_thumbs_loaded(page, "#results")
    page.screenshot(path=str(ARTIFACTS / "web-results.png"))

    photo = page.locator("#results .thumb:not(:has-text('▶'))").first
    photo.click()
    page.wait_for_selector("#captions li", timeout=15_000)
    assert page.locator("#large").is_visible() and page.locator("#clip").is_hidden()  # no empty player
    assert page.locator("#captions li").count() == 5 and page.locator("#similar .thumb").count() >= 1
    assert "folder" in page.locator("#facts").inner_text()
    page.wait_for_function("() => document.querySelector('#large').naturalWidth > 0", timeout=15_000)
    assert page.locator("#item-tags .tag").count() >= 1  # the photo's tags, as chips
    page.screenshot(path=str(ARTIFACTS / "web-detail.png"))
    first = page.locator("#name").inner_text()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => document.querySelector('#name').textContent !== {first!r}", timeout=10_000)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"() => document.querySelector('#name').textContent === {first!r}", timeout=10_000)
    page.keyboard.press("Escape")
    assert page.locator("#detail").is_hidden() and page.locator("#results").is_visible()
    page.keyboard.press("Escape")  # and back to the library
    assert page.locator("#results").is_hidden() and page.locator("#timeline .thumb").count() == 26

    page.fill("#q", "a shape")
    page.press("#q", "Enter")
    page.wait_for_function("() => $('hint').textContent.includes('“a shape”')", timeout=15_000)
    page.evaluate("$('weak').open = true")  # (a vague query: its matches may all be weak)
    chip = page.locator("#results .thumb .tag").first
    tag = chip.inner_text()
    chip.click()  # only the photos with that tag
    page.wait_for_selector("#filters .tag", timeout=10_000)
    page.wait_for_function(
        f"() => [...document.querySelectorAll('#results .thumb')].length > 0 && [...document.querySelectorAll("
        f"'#results .thumb')].every(t => [...t.querySelectorAll('.tag')].some(c => c.textContent === {tag!r}))",
        timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "web-tag-filter.png"))
    page.keyboard.press("Escape")  # the library again, filters cleared
    assert page.locator("#filters .tag").count() == 0

    page.locator("#timeline .thumb:has-text('▶')").first.click()  # the video: its player, no image
    page.wait_for_selector("#captions li", timeout=15_000)
    assert page.locator("#clip").is_visible() and page.locator("#large").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "web-detail-video.png"))
    page.keyboard.press("Escape")
    assert problems == []


@pytest.mark.slow
def test_paste_an_image_and_review_duplicates(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb", timeout=15_000)
    png = base64.b64encode((Path(__file__).resolve().parent.parent / "sample_data" / SAMPLE_ROWS[2]["image"])
                           .read_bytes()).decode()
    page.evaluate("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
    }""", png)
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert "results for pasted.png" in page.locator("#hint").inner_text()
    assert page.locator("#results .thumb figcaption").first.inner_text().startswith("1.000")  # the photo itself

    page.click("#nav-duplicates")
    page.wait_for_selector("#dupes .group .thumb img", timeout=30_000)
    group = page.locator("#dupes .group").first
    assert group.locator(".thumb").count() == 2 and "×" in group.inner_text() and "kB" in group.inner_text()
    assert group.locator(".thumb .keep").count() == 1 and "Suggested to keep" in group.inner_text()
    assert "similarity" in group.locator(".thumb .similar").inner_text()
    _visible_thumbs_loaded(page, "#dupes")
    page.screenshot(path=str(ARTIFACTS / "web-duplicates.png"))
    assert problems == []


@pytest.mark.slow
def test_keys_open_and_close_a_photo_and_the_focus_comes_back(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    second = page.locator("#timeline .thumb").nth(1)
    second.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#captions li", timeout=15_000)  # opened, and its details came (a closed one gets none)
    assert page.locator("#detail").is_visible(), "Enter opened the photo and closed it again"
    first_name = page.locator("#timeline .thumb img").first.get_attribute("alt")
    page.keyboard.press("ArrowLeft")  # to the first: nothing before it
    expect(page.locator("#name")).to_have_text(first_name, timeout=10_000)
    expect(page.locator("#prev")).to_be_disabled()
    assert float(page.locator("#prev").evaluate("b => getComputedStyle(b).opacity")) < 0.5  # and looks it
    assert float(page.locator("#next").evaluate("b => getComputedStyle(b).opacity")) == 1.0
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    first_id = page.locator("#timeline .thumb").first.get_attribute("data-id")
    assert page.evaluate("document.activeElement.dataset.id") == first_id, "the focus did not come back on Esc"
    summary = "25 photos · 1 video"
    expect(page.locator("#hint")).to_have_text(summary)
    page.fill("#q", "a red circle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert "for “a red circle”" in page.locator("#hint").inner_text()
    page.keyboard.press("Escape")  # back to the library: the status line says what is on screen again
    expect(page.locator("#hint")).to_have_text(summary)
    page.click("#nav-duplicates")
    page.wait_for_selector("#dupes .group", timeout=30_000)
    expect(page.locator("#hint")).to_contain_text(" of near-duplicates")
    page.go_back()
    expect(page.locator("#hint")).to_have_text(summary, timeout=15_000)  # (a busy machine: it comes, later)
    assert problems == []


@pytest.mark.slow
def test_photos_keep_their_shape_in_rows_of_equal_height(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1280, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    _visible_thumbs_loaded(page, "#timeline")
    tiles = page.evaluate("""() => [...document.querySelectorAll('#timeline .thumb img')].map((img) => {
        const box = img.getBoundingClientRect();
        return {top: Math.round(box.top), width: box.width, height: box.height,
                natural: img.naturalWidth ? img.naturalWidth / img.naturalHeight : null};
    }).filter((t) => t.top < innerHeight)""")
    loaded = [t for t in tiles if t["natural"]]
    assert len(tiles) >= 6 and len(loaded) >= 3
    texts = page.locator("#timeline .thumb").all_inner_texts()  # a tile is its photo; a video keeps its length
    assert not any("kB" in t or "×" in t for t in texts) and any("▶" in t for t in texts)
    assert len({round(t["natural"], 2) for t in loaded}) > 1, "the sample has photos of several shapes"
    for tile in loaded:  # each shown in its own shape, not cut to a square
        assert abs(tile["width"] / tile["height"] - tile["natural"]) / tile["natural"] < 0.03, tile
    rows: dict[int, list[float]] = {}
    for tile in tiles:
        rows.setdefault(tile["top"], []).append(tile["height"])
    assert all(max(h) - min(h) <= 1 for h in rows.values()), rows  # a row's photos are one height
    assert problems == []


@pytest.mark.slow
def test_the_detail_view_fills_the_screen_zooms_and_swipes(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1280, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    photos = page.locator("#timeline .thumb:not(:has-text('▶'))")
    photos.nth(1).click()
    page.wait_for_function("() => $('large').complete && $('large').naturalWidth > 0", timeout=15_000)
    shown = page.evaluate("""() => {
        const img = $('large'), box = $('stage').getBoundingClientRect();
        const fit = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
        return {natural: [img.naturalWidth, img.naturalHeight], drawn: [img.naturalWidth * fit, img.naturalHeight * fit],
                stage: [box.width, box.height]};
    }""")
    assert shown["natural"][1] < 500 and shown["drawn"][1] > 1.5 * shown["natural"][1], shown  # enlarged to fit
    assert shown["stage"][1] >= 600 and shown["stage"][1] <= 800
    name = page.locator("#name").inner_text()
    page.dblclick("#stage")
    assert "scale(2.5)" in page.locator("#large").get_attribute("style")
    page.dblclick("#stage")
    assert "scale(1)" in page.locator("#large").get_attribute("style")
    page.mouse.move(640, 400)
    page.mouse.wheel(0, -300)  # the wheel zooms where the pointer is
    expect(page.locator("#stage")).to_have_class(re.compile(r"\bzoomed\b"), timeout=5_000)
    page.dblclick("#stage")
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()  # a swipe to the left: the next photo
    page.wait_for_function(f"() => $('name').textContent !== {name!r}", timeout=5_000)
    assert page.locator("#full").is_visible()
    assert problems == []


@pytest.mark.slow
def test_the_url_holds_the_search_and_the_open_photo(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.fill("#q", "a red circle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert "q=a+red+circle" in page.url
    first = page.locator("#results .thumb").first.get_attribute("data-id")
    page.locator("#results .thumb").first.click()
    page.wait_for_selector("#detail:not([hidden])")
    assert f"photo={first}" in page.url
    shared = page.url
    page.go_back()  # Back closes the photo, and leaves the search as it was
    expect(page.locator("#detail")).to_be_hidden(timeout=10_000)
    expect(page).not_to_have_url(re.compile(r"photo="))
    assert page.locator("#results").is_visible() and page.locator("#results .thumb").count() > 0
    page.go_back()  # then leaves the search for the library
    page.wait_for_selector("#timeline .thumb", timeout=15_000)
    assert page.locator("#results").is_hidden() and page.input_value("#q") == ""
    page.go_forward()
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert page.input_value("#q") == "a red circle"
    fresh = browser.new_page(viewport={"width": 1200, "height": 800}, storage_state=page.context.storage_state())
    fresh.goto(shared)  # a shared (or reloaded) link shows the same search with the same photo open
    fresh.wait_for_selector("#detail:not([hidden])", timeout=15_000)
    assert fresh.input_value("#q") == "a red circle" and fresh.locator("#results .thumb").count() > 0
    assert fresh.locator("#name").inner_text() == page.locator("#results .thumb img").first.get_attribute("alt")
    page.fill("#after", "2020-01-01")  # a filter is part of it too, and survives a reload
    page.wait_for_function("() => location.search.includes('after=2020-01-01')", timeout=5_000)
    page.reload()
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert page.input_value("#after") == "2020-01-01" and page.input_value("#q") == "a red circle"
    assert problems == []


@pytest.mark.slow
def test_a_phone_sized_screen_in_dark_mode(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, color_scheme="dark")
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    _visible_thumbs_loaded(page, "#timeline")

    def fits() -> None:
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        small = page.evaluate("""() => [...document.querySelectorAll('button, input, select, nav a')]
            .filter((e) => e.offsetParent !== null)
            .map((e) => [e.id || e.textContent, e.getBoundingClientRect().height])
            .filter(([, h]) => h < 40)""")
        assert small == []  # touch targets at least 40 px high

    fits()
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(250, 250, 250)"  # dark
    assert page.locator("header").bounding_box()["height"] <= 0.15 * 844  # the filters fold behind one button
    assert page.locator("#after").is_hidden()
    page.click("#more-filters")
    assert page.locator("#after").is_visible() and page.locator("#more-filters").get_attribute("aria-expanded") == "true"
    fits()
    page.fill("#folder", "/nowhere")
    page.locator("#folder").dispatch_event("change")
    assert page.locator("#more-filters").inner_text() == "Filters (1)"
    page.fill("#folder", "")
    page.locator("#folder").dispatch_event("change")
    page.click("#more-filters")
    fits()
    page.screenshot(path=str(ARTIFACTS / "web-phone-home.png"))
    page.locator("#timeline .thumb").nth(1).click()
    page.wait_for_selector("#captions li", timeout=15_000)
    fits()
    page.screenshot(path=str(ARTIFACTS / "web-phone-detail.png"))
    assert all(page.evaluate("[...document.images].filter(i => i.offsetParent).map(i => i.alt)"))  # alt text
    assert problems == []


@pytest.mark.slow
def test_thumbnails_load_near_the_screen_at_its_density(server: str, browser) -> None:
    for density in (1, 2):
        page = browser.new_page(viewport={"width": 1200, "height": 400}, device_scale_factor=density)
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/thumbnail" in r.url else None)
        page.goto(server)
        page.wait_for_selector("#timeline .thumb img[src]", timeout=15_000)
        page.wait_for_function(f"() => document.querySelectorAll('#timeline .thumb').length === 26 && "
                               f"({_NEAR_ASKED})()", timeout=15_000)
        tiles = page.locator("#timeline .thumb").count()
        assert tiles == 26 and 4 <= len(asked) < 18, (tiles, len(asked))  # the whole library listed, ~1/3 asked for
        wanted = page.evaluate("""() => [...document.querySelectorAll('#timeline .thumb img[src]')].map((img) => {
            const box = img.getBoundingClientRect();
            return [img.src.includes('side=640'), Math.max(box.width, box.height) * devicePixelRatio > 320];
        })""")
        assert all(big == needed for big, needed in wanted), wanted  # the size the tile needs at this density
        assert any(big for big, _ in wanted) == (density == 2)
        for _ in range(20):  # a screen at a time: each comes into view once
            before = page.evaluate("scrollY")
            page.mouse.wheel(0, 300)
            page.wait_for_function(f"() => (scrollY > {before} || innerHeight + scrollY >= "
                                   f"document.documentElement.scrollHeight - 1) && ({_NEAR_ASKED})()", timeout=15_000)
        page.wait_for_function("() => document.querySelectorAll('#timeline .thumb img[src]').length === 26",
                               timeout=15_000)
        page.wait_for_function(_NEAR_ASKED, timeout=15_000)
        assert len(set(asked)) == len(asked) == 26  # each once, as it came into view
        page.close()
        assert problems == []


@pytest.mark.slow
def test_jump_to_a_month_on_the_timeline(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 500})
    page.goto(server.split("/login")[0] + "/?page=3")  # three files a request: the oldest months are not loaded
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.wait_for_selector("#jump:not([hidden])", timeout=10_000)
    months = page.locator("#jump option:not([disabled])").all_inner_texts()
    assert len(months) >= 8 and sum(int(m.rsplit("(", 1)[1].rstrip(")")) for m in months) == 26
    oldest = page.locator("#jump option").last.get_attribute("value")
    title = months[-1].rsplit(" (", 1)[0]
    assert title not in page.locator("#timeline").inner_text()
    page.select_option("#jump", oldest)
    page.wait_for_function(f"() => [...document.querySelectorAll('#timeline .month h2')].some(h => "
                           f"h.textContent === {title!r} && h.getBoundingClientRect().top < 200)", timeout=10_000)
    focused = page.evaluate("document.activeElement.closest('.month').dataset.month")
    assert focused == title  # the keyboard is there too
    page.click("#newest")  # and back to the newest photos
    page.wait_for_selector("#newest[hidden]", state="attached", timeout=10_000)
    page.wait_for_function(f"() => document.querySelector('#timeline .month h2').textContent === {months[0].rsplit(' (', 1)[0]!r}")
    second = page.locator("#jump option").nth(2).get_attribute("value")  # a month already on screen: scrolled to
    second_title = page.locator("#jump option").nth(2).inner_text().rsplit(" (", 1)[0]
    shown = page.locator("#timeline .thumb").count()
    page.select_option("#jump", second)
    page.wait_for_function(f"() => document.activeElement.closest('.month')?.dataset.month === {second_title!r}",
                           timeout=10_000)  # scrolled there, the keyboard on its first photo
    assert page.locator("#timeline .thumb").count() >= shown and page.locator("#newest").is_hidden()
    assert problems == []


@pytest.mark.slow
def test_select_photos_to_copy_their_paths_find_more_and_write_sidecars(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    tiles = page.locator("#timeline .thumb")
    tiles.nth(1).hover()
    tiles.nth(1).locator(".pick").click()  # the tick on a photo
    assert page.locator("#detail").is_hidden() and page.locator("#selected-count").inner_text() == "1 photo selected"
    tiles.nth(4).click(modifiers=["Shift"])  # shift: all from the last one chosen
    assert page.locator("#selected-count").inner_text() == "4 photos selected"
    tiles.nth(2).click()  # while some are selected, a click takes one out instead of opening it
    assert page.locator("#detail").is_hidden() and page.locator("#selected-count").inner_text() == "3 photos selected"
    tiles.nth(6).focus()
    page.keyboard.press(" ")  # the keyboard selects too
    assert page.locator("#selected-count").inner_text() == "4 photos selected"
    assert page.locator("#timeline .thumb.selected").count() == 4
    chosen = [tiles.nth(n).locator("img").get_attribute("alt") for n in (1, 3, 4, 6)]
    page.screenshot(path=str(ARTIFACTS / "web-selection.png"))

    page.click("#copy-paths")
    page.wait_for_function("() => $('selection-note').textContent.startsWith('copied')", timeout=5_000)
    copied = page.evaluate("navigator.clipboard.readText()").split("\n")
    assert [path.rsplit("/", 1)[1] for path in copied] == chosen and all(p.startswith("/") for p in copied)
    quoted = page.evaluate("""() => ["/a b/it's.png", "/new\\nline\\u202e.png", "/plain-1.png"].map(shellWord)""")
    assert quoted == ["'/a b/it'\\''s.png'", "$'/new\\x0aline\\u202e.png'", "/plain-1.png"]  # a path a line

    page.click("#export-xmp")
    page.wait_for_function("() => $('selection-note').textContent.includes('written')", timeout=15_000)
    assert page.locator("#selection-note").inner_text().startswith("4 sidecars written")
    assert sorted(Path(p + ".xmp").is_file() for p in copied) == [True] * 4
    assert "<rdf:li>" in Path(copied[0] + ".xmp").read_text(encoding="utf-8")  # the photo's tags

    ids = {int(tiles.nth(n).get_attribute("data-id")) for n in (1, 3, 4, 6)}
    page.click("#like-these")
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert "more like 4 selected photos" in page.locator("#hint").inner_text()
    found = {int(i) for i in page.locator("#results .thumb").evaluate_all("ts => ts.map(t => t.dataset.id)")}
    assert found and not found & ids  # like them, not them
    assert page.locator("#selection").is_hidden()  # a new view, a new selection
    page.locator("#results .thumb").first.click(modifiers=["Control"])
    assert page.locator("#selection").is_visible()
    page.keyboard.press("Escape")  # Esc lets go of the selection first
    assert page.locator("#selection").is_hidden() and page.locator("#results").is_visible()
    assert problems == []


@pytest.mark.slow
def test_weak_matches_are_folded_below_the_strong_ones(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    from clipdex.retrieval.search.relevance import made_up_words

    nonsense = page.evaluate("""async (words) => {  // nonsense that this library's floor calls weak (most is)
        for (const word of words) {
            const hits = await (await fetch(`/api/search?k=10&q=${encodeURIComponent(word)}`)).json();
            if (hits.length && hits.every((hit) => hit.strong === false)) return word;
        }
    }""", made_up_words(12, seed=99))
    page.fill("#q", nonsense)
    page.keyboard.press("Enter")
    page.wait_for_selector("#weak:not([hidden])", timeout=15_000)
    assert page.locator("#hint").inner_text().startswith(f"No strong matches for “{nonsense}”")
    assert page.locator("#strong .thumb").count() == 0 and page.locator("#weak .thumb").first.is_hidden()
    page.click("#weak summary")  # shown when asked for
    assert page.locator("#weak .thumb").first.is_visible()
    page.fill("#q", "a red circle")
    page.keyboard.press("Enter")
    page.wait_for_function("() => $('hint').textContent.includes('“a red circle”')", timeout=15_000)
    strong = page.locator("#strong .thumb").count()
    assert strong >= 1 and page.locator("#hint").inner_text().startswith(f"{strong} strong match")
    assert page.locator("#weak .thumb").first.is_hidden()
    scores = page.locator("#results .thumb figcaption").evaluate_all("cs => cs.map(c => Number(c.firstChild.textContent))")
    assert len(scores) > strong and min(scores[:strong]) > max(scores[strong:])  # strong ones score higher
    assert problems == []
