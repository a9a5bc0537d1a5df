"""The page in a real headless Chromium: the library as a timeline before any query (page by page as it
scrolls), a query, the detail view (only the element for the item's kind visible, ←/→, Esc), paste to search by
image, the duplicates page, a phone-sized viewport without sideways scrolling, thumbnails loaded near the screen,
jumping to a month, selecting photos, less likely matches after the strong ones and Load more, why each hit
matched, a URL for every view (more like this/these, an uploaded image, a month, duplicates at a threshold) and a
deep link kept through the sign-in, the detail view's facts beside a photo never shown over twice its pixels
(Download, the folder, 1:1 on a click), selection mode on a phone and cards that keep words whole, and the
duplicates' threshold and "select the others" moved away with an undo list. Screenshots of each view go to
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
CAMERA = Path(SAMPLE_ROWS[5]["image"]).name  # the photo given a camera's EXIF


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_camera(photo: Path) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    inner = exif.get_ifd(0x8769)
    inner[0x829A], inner[0x829D], inner[0x8827], inner[0x920A], inner[0xA434] = 0.004, 2.8, 100, 50.0, "EF50mm f/1.8"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 30.24), "E", (2.0, 17.0, 40.2)
    with Image.open(photo) as im:
        im.load()
        im.save(photo, exif=exif)


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
    _with_camera(folder / CAMERA)  # the same pixels, with the EXIF a camera writes
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
def test_less_likely_matches_follow_the_strong_ones_and_more_load(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    from clipdex.retrieval.search.relevance import made_up_words

    nonsense = page.evaluate("""async (words) => {  // nonsense that this library calls weak (most is)
        for (const word of words) {
            const hits = await (await fetch(`/api/search?k=10&q=${encodeURIComponent(word)}`)).json();
            if (hits.length && hits.every((hit) => hit.strong === false)) return word;
        }
    }""", made_up_words(12, seed=99))
    assert nonsense
    page.fill("#q", nonsense)
    page.keyboard.press("Enter")
    page.wait_for_selector("#weak:not([hidden])", timeout=15_000)
    assert page.locator("#hint").inner_text().startswith(f"No strong matches for “{nonsense}”: ")
    assert "less likely matches below" in page.locator("#hint").inner_text()
    assert page.locator("#strong .thumb").count() == 0
    assert page.locator("#weak h2").inner_text() == "Less likely matches"  # plain words, not "made-up words"
    assert page.locator("#weak .thumb").first.is_visible()  # never an empty page while anything matched
    page.fill("#q", "a red circle")
    page.keyboard.press("Enter")
    page.wait_for_function("() => $('hint').textContent.includes('“a red circle”')", timeout=15_000)
    strong, weak = page.locator("#strong .thumb").count(), page.locator("#weak .thumb").count()
    hint = page.locator("#hint").inner_text()
    assert strong >= 1 and hint.startswith(f"{strong} strong match") and f"then {weak} less likely" in hint
    assert "Load more" not in hint and page.locator("#load-more").is_hidden()  # all there is: the count is true
    order = page.locator("#results .thumb").evaluate_all("ts => ts.map(t => t.dataset.id)")
    assert order == page.evaluate("state.results.list.map(h => String(h.id))")  # the strong ones first
    assert problems == []


@pytest.mark.slow
def test_load_more_goes_past_the_first_page_of_results(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.goto(server.split("/login")[0] + "/?first=5")  # five results a request
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.fill("#q", "a shape")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .thumb", timeout=15_000)
    expect(page.locator("#results .thumb")).to_have_count(5)
    assert "(Load more for the rest)" in page.locator("#hint").inner_text()  # 5 shown, more there: said so
    seen = 5
    while page.locator("#load-more").is_visible():
        page.click("#load-more")
        page.wait_for_function(f"() => document.querySelectorAll('#results .thumb').length > {seen} || "
                               f"$('load-more').hidden", timeout=15_000)
        seen = page.locator("#results .thumb").count()
    ids = page.locator("#results .thumb").evaluate_all("ts => ts.map(t => t.dataset.id + ':' + t.textContent)")
    assert seen > 5 and len(set(ids)) == len(ids)  # past the first page, each once
    hint = page.locator("#hint").inner_text()
    assert "Load more" not in hint
    shown = [int(n) for n in re.findall(r"(\d+) (?:strong match|less likely|result)", hint)]
    assert sum(shown) == seen, (hint, seen)  # the count is of what is there
    assert problems == []


@pytest.mark.slow
def test_each_hit_says_why_it_matched(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)

    def with_reasons(route) -> None:  # whatever the server says, the page shows the reasons hits carry
        hits = route.fetch().json()
        for n, hit in enumerate(hits):
            hit["why"] = ["picture", "file name"] if n == 0 else ["picture"]
        route.fulfill(json=hits)

    page.route("**/api/search?*", with_reasons)
    page.fill("#q", "a red circle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .thumb .why", timeout=15_000)
    first = page.locator("#results .thumb").first
    assert first.locator(".why").inner_text() == "matched: picture · file name" and first.locator(".why").is_visible()
    assert page.locator("#results .thumb .why").count() == page.locator("#results .thumb").count()
    assert problems == []


def _paste(page, name: str) -> None:
    png = base64.b64encode((Path(__file__).resolve().parent.parent / "sample_data" / SAMPLE_ROWS[2]["image"])
                           .read_bytes()).decode()
    page.evaluate("""([data, name]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: "image/png" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
    }""", [png, name])


@pytest.mark.slow
def test_every_view_has_a_url_that_reload_and_back_restore(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 500})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    photo = page.locator("#timeline .thumb:not(:has-text('▶'))").first
    name, first = photo.locator("img").get_attribute("alt"), photo.get_attribute("data-id")
    photo.click()
    page.wait_for_selector("#detail:not([hidden])")
    page.click("#more-like")  # more like this
    page.wait_for_function(f"() => $('hint').textContent.includes('more like {name}')", timeout=15_000)
    assert re.search(rf"[?&]like={first}\b", page.url) and "photo=" not in page.url
    page.reload()
    page.wait_for_function(f"() => $('hint').textContent.includes('more like {name}')", timeout=15_000)
    assert page.locator("#results .thumb").count() > 0

    tiles = page.locator("#results .thumb")
    tiles.nth(1).click(modifiers=["Control"])
    tiles.nth(2).click(modifiers=["Control"])
    page.click("#like-these")  # more like these
    page.wait_for_function("() => $('hint').textContent.includes('more like 2 selected photos')", timeout=15_000)
    assert len(re.findall(r"like=\d+", page.url)) == 2
    page.reload()
    page.wait_for_function("() => $('hint').textContent.includes('more like 2 selected photos')", timeout=15_000)
    page.go_back()
    page.wait_for_function(f"() => $('hint').textContent.includes('more like {name}')", timeout=15_000)

    _paste(page, "pasted.png")  # an image query, by the id the server keeps it under
    page.wait_for_function("() => $('hint').textContent.includes('results for pasted.png')", timeout=15_000)
    assert re.search(r"[?&]image=[0-9a-f]{32}\b", page.url)
    ids = page.locator("#results .thumb").evaluate_all("ts => ts.map(t => t.dataset.id)")
    page.reload()
    page.wait_for_function("() => $('hint').textContent.includes('results for pasted.png')", timeout=15_000)
    assert page.locator("#results .thumb").evaluate_all("ts => ts.map(t => t.dataset.id)") == ids

    page.click("#nav-duplicates")  # duplicates, with their threshold
    page.wait_for_selector("#dupes .group", timeout=30_000)
    assert page.input_value("#threshold") == "0.95" and "duplicates" in page.url
    page.fill("#threshold", "0.9")
    page.locator("#threshold").dispatch_event("change")
    page.wait_for_function("() => location.search.includes('duplicates=0.9')", timeout=5_000)
    page.wait_for_selector("#dupes .group", timeout=30_000)
    page.reload()
    page.wait_for_selector("#dupes .group", timeout=30_000)
    assert page.input_value("#threshold") == "0.9"
    page.go_back()
    page.wait_for_function("() => $('threshold').value === '0.95'", timeout=30_000)
    page.go_back()
    page.wait_for_function("() => $('hint').textContent.includes('results for pasted.png')", timeout=15_000)

    page.click("#home")  # a month of the timeline
    page.wait_for_selector("#jump:not([hidden])", timeout=15_000)
    oldest = page.locator("#jump option").last.get_attribute("value")
    title = page.locator("#jump option").last.inner_text().rsplit(" (", 1)[0]
    on_top = (f"() => [...document.querySelectorAll('#timeline .month h2')].some(h => h.textContent === {title!r} "
              f"&& h.getBoundingClientRect().top >= 0 && h.getBoundingClientRect().bottom <= innerHeight)")
    assert not page.evaluate(on_top)
    page.select_option("#jump", oldest)  # (not on screen before)
    page.wait_for_function(f"() => location.search.includes('month={oldest}')", timeout=5_000)
    page.wait_for_function(on_top, timeout=15_000)
    page.reload()
    page.wait_for_function(on_top, timeout=15_000)
    page.go_back()  # the timeline from the newest
    page.wait_for_function("() => !location.search.includes('month=') && $('newest').hidden", timeout=15_000)
    assert problems == []


@pytest.mark.slow
def test_a_link_opened_before_signing_in_opens_after_it(server: str, browser) -> None:
    base = server.split("/login")[0]
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{base}/?q=a+red+circle")  # a deep link, not signed in: the sign-in page
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#results .thumb", timeout=15_000)
    assert page.input_value("#q") == "a red circle" and "q=a+red+circle" in page.url


@pytest.mark.slow
def test_the_detail_view_shows_facts_beside_the_photo_never_over_twice_its_size(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1280, "height": 800})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.locator("#timeline .thumb img[alt='00005.png']").click()  # 320×160: the stage could show it 2.7×
    page.wait_for_function("() => $('large').complete && $('large').naturalWidth > 0 && "
                           "getComputedStyle($('large')).visibility === 'visible'", timeout=15_000)
    drawn = page.evaluate("() => { const r = $('large').getBoundingClientRect(), s = $('stage').getBoundingClientRect();"
                          " return [r.width, r.height, $('large').naturalWidth, s.width, s.height]; }")
    assert drawn[3] > 2.5 * drawn[2]  # room for more...
    assert abs(drawn[0] - 2 * drawn[2]) <= 1, drawn  # ...yet at most twice its own pixels
    page.wait_for_function("() => $('facts').textContent.includes('folder')", timeout=15_000)
    facts = page.locator("#facts").bounding_box()
    assert facts["y"] + facts["height"] <= 800  # above the fold, beside the photo
    text = page.locator("#facts").inner_text()
    assert all(term in text for term in ("date", "size", "folder", "320×160"))
    page.click("#large")  # a click: 1:1
    page.wait_for_function("() => Math.abs($('large').getBoundingClientRect().width - $('large').naturalWidth) < 1",
                           timeout=5_000)
    page.click("#large")  # again: fitted
    page.wait_for_function("() => Math.abs($('large').getBoundingClientRect().width - 2 * $('large').naturalWidth) < 1",
                           timeout=5_000)
    with page.expect_download() as download:
        page.click("#download")  # the original file, under its name
    assert download.value.suggested_filename == "00005.png"
    original = Path(download.value.path()).read_bytes()
    page.click("#open-folder")  # a browser the server cannot open folders for: the folder's path
    page.wait_for_function("() => $('copied').textContent.includes('copied')", timeout=5_000)
    folder = page.evaluate("navigator.clipboard.readText()")
    assert (Path(folder) / "00005.png").read_bytes() == original
    assert page.locator("#open-folder").inner_text() == "Copy folder path"

    page.keyboard.press("Escape")
    page.locator(f"#timeline .thumb img[alt='{CAMERA}']").click()  # the photo that carries a camera's EXIF
    page.wait_for_function("() => $('facts').textContent.includes('camera')", timeout=15_000)
    text = page.locator("#facts").inner_text()
    assert "Canon EOS 5D" in text and "EF50mm f/1.8" in text and "1/250 s · f/2.8 · ISO 100 · 50 mm" in text
    assert "place\n48.85840, 2.29450" in text or "place\t48.85840, 2.29450" in text, text
    page.screenshot(path=str(ARTIFACTS / "web-detail-facts.png"))
    assert problems == []


@pytest.mark.slow
def test_on_a_phone_the_circles_come_with_selection_mode_and_cards_keep_words_whole(server: str, browser) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True)
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    assert page.locator("#timeline .thumb .pick").first.is_hidden()  # nothing covers the photos
    page.click("#select-mode")
    assert page.locator("#timeline .thumb .pick").first.is_visible()
    page.locator("#timeline .thumb").nth(1).tap()  # in selection mode a tap selects
    assert page.locator("#detail").is_hidden() and page.locator("#selected-count").inner_text() == "1 photo selected"
    page.screenshot(path=str(ARTIFACTS / "web-phone-select.png"))
    page.click("#clear-selection")
    assert page.locator("#timeline .thumb .pick").first.is_hidden() and page.locator("#selection").is_hidden()
    page.locator("#timeline .thumb").nth(1).tap()  # and out of it a tap opens
    page.wait_for_selector("#detail:not([hidden])")
    page.keyboard.press("Escape")
    page.locator("#timeline .thumb").nth(2).dispatch_event("pointerdown", {"pointerType": "touch", "isPrimary": True})
    page.wait_for_function("() => $('selected-count').textContent === '1 photo selected'", timeout=10_000)  # a long press
    assert page.locator("#timeline .thumb").nth(2).get_attribute("class").split().count("selected") == 1
    assert page.locator("#timeline .thumb .pick").first.is_visible()  # selection mode, from the long press
    page.locator("#timeline .thumb").nth(2).dispatch_event("pointerup", {"pointerType": "touch"})
    page.click("#clear-selection")

    page.click("#nav-duplicates")
    page.wait_for_selector("#dupes .group .thumb", timeout=30_000)
    broken = page.evaluate("""() => {  // each word of every card on one line, even in the narrowest card
        const grid = document.createElement('div');
        grid.className = 'grid';
        grid.style.width = '70px';
        grid.append(figure({id: 999999, path: '/photos/00077.jpg', width: 40, height: 100, size: 5120,
                            taken: '2024-06-30T10:00:00+00:00', score: 0.5}, [], true));
        $('groups').append(grid);
        const split = [];
        for (const caption of document.querySelectorAll('#dupes figcaption')) {
            const walker = document.createTreeWalker(caption, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                for (const match of node.textContent.matchAll(/\\S+/g)) {
                    const range = document.createRange();
                    range.setStart(node, match.index);
                    range.setEnd(node, match.index + match[0].length);
                    const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
                    if (tops.size > 1) split.push(match[0]);
                }
            }
        }
        grid.remove();
        return split;
    }""")
    assert broken == []
    assert problems == []


@pytest.mark.slow
def test_duplicates_have_a_threshold_and_the_others_can_be_moved_away(server: str, browser, tmp_path: Path) -> None:
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.click("#nav-duplicates")
    page.wait_for_selector("#dupes .group .thumb", timeout=30_000)
    expect(page.locator("#threshold")).to_have_value("0.95")
    group = page.locator("#dupes .group").first
    keeper = group.locator(".thumb:has(.keep) img").get_attribute("alt")
    other = group.locator(".thumb:has(.similar) img").get_attribute("alt")
    group.locator(".select-others").click()  # all but the one to keep
    assert page.locator("#selected-count").inner_text() == "1 photo selected"
    page.click("#copy-paths")
    page.wait_for_function("() => $('selection-note').textContent.startsWith('copied')", timeout=5_000)
    source = Path(page.evaluate("navigator.clipboard.readText()"))
    assert source.name == other != keeper and source.is_file()
    page.click("#move")
    away = tmp_path / "set aside"
    page.fill("#move-folder", str(away))
    page.click("#move-form button[type=submit]")
    page.wait_for_function("() => $('hint').textContent.includes('moved')", timeout=30_000)
    assert page.locator("#hint").inner_text().startswith("1 file moved")
    assert (away / other).is_file() and not source.exists()  # moved, not deleted
    undo = list(away.glob("clipdex-undo-*.sh"))
    assert len(undo) == 1 and "to undo: sh" in page.locator("#hint").inner_text()
    assert str(source) in undo[0].read_text()
    page.fill("#threshold", "0.5")  # a lower threshold groups more
    page.locator("#threshold").dispatch_event("change")
    page.wait_for_function("() => location.search.includes('duplicates=0.5')", timeout=5_000)
    page.wait_for_function("() => $('hint').textContent.includes('near-duplicates') || "
                           "$('hint').textContent.startsWith('No near')", timeout=30_000)
    assert problems == []


@pytest.mark.slow
def test_what_the_search_read_is_shown_as_chips_one_click_removes_and_places_search_there(server: str, browser) -> None:
    """"a photo in Paris": the place (the camera photo's GPS) is a chip and a filter; one click on it searches the
    words as typed, and the URL keeps that through a reload."""
    page, problems = _signed_in(browser, server, viewport={"width": 1200, "height": 800})
    page.wait_for_selector("#timeline .thumb img", timeout=15_000)
    page.fill("#q", "a photo in Paris")
    page.keyboard.press("Enter")
    chip = page.locator("#filters [data-read=place]")
    expect(chip).to_have_text("in Paris, France", timeout=15_000)
    expect(page.locator("#results .thumb")).to_have_count(1)
    chip.click()
    expect(page.locator("#filters [data-read]")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"unread=place"))
    expect(page.locator("#results .thumb")).not_to_have_count(1, timeout=15_000)
    shown = page.locator("#results .thumb").count()
    page.reload()
    expect(page.locator("#results .thumb")).to_have_count(shown, timeout=15_000)
    expect(page.locator("#filters [data-read]")).to_have_count(0)
    page.fill("#q", "a photo from yesterday")  # a new sentence is read afresh: the photo taken a day ago
    page.keyboard.press("Enter")
    expect(page.locator("#filters [data-read=date]")).to_have_count(1, timeout=15_000)
    expect(page.locator("#results .thumb")).to_have_count(1)
    page.click("#nav-places")  # the Places page: each place with a photo; a click searches there
    card = page.locator("#places .thumb")
    expect(card).to_have_count(1, timeout=15_000)
    expect(card.locator("figcaption")).to_have_text("Paris, France · 1 file")
    expect(card.locator("img")).to_have_js_property("complete", True)
    assert card.locator("img").evaluate("i => i.naturalWidth") > 0
    expect(page).to_have_url(re.compile(r"\?places$"))
    card.click()
    expect(page.locator("#filters [data-read=place]")).to_have_text("in Paris, France", timeout=15_000)
    expect(page.locator("#results .thumb")).to_have_count(1)
    assert problems == []
