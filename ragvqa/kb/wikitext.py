"""Fast wikitext -> plain text sections + image references.

The fast path of the MediaWiki source (:mod:`ragvqa.kb.sources.mediawiki`):
compiled regular expressions that run in C do the bulk of the work, and the
only Python-level loops walk over markup *tokens* (``{{``, ``}}``, ``{|``,
``|}``, ``[[``, ``]]``), never over characters. That is what lets it beat
gensim's ``filter_wiki`` (a per-character loop plus ~15 regexes run up to
three times) while also splitting sections and extracting images.

Public API:
    parse_wikitext(title, wikitext) -> (list[Section], ImageRef | None)
        sections (lead = index 0 titled with the page title, then every
        ``== heading ==`` of level 2..6 in page order) with clean plain text and
        the images found in each; the second value is the page's infobox image.
    clean_wikitext(text) -> str
        markup-free plain text of a wikitext fragment (no section split).
    normalize_file_name(name) -> str | None
        ``"File:foo_bar.JPG|thumb"`` -> ``"Foo bar.JPG"``; None if not an image.

What the text keeps: prose, list items (markers dropped), link labels
(``[[a|b]]`` -> ``b``, ``[[a]]`` -> ``a``), external link labels, and the text of
the few inline templates that carry facts (``{{convert|100|km|mi}}`` -> "100 km",
``{{birth date|1879|3|14}}`` -> "March 14, 1879", ``{{lang|de|x}}``/``{{nowrap|x}}``
-> "x", ``{{as of|..}}``, ``{{circa|..}}``, ``{{frac|..}}``, ``{{chem|..}}``, ...; see
``_RENDERERS``). What it drops: every other template (nested, any depth) and
parser function, tables (``{| ... |}``,
nested), refs, comments, math/chem/score/timeline/code blocks, galleries,
File/Image/Category/interlanguage links, HTML tags (contents kept), bold and
italic quotes, behaviour switches (``__TOC__``), HTML entities (decoded).

Images (``ImageRef.kind``): ``file_link`` for ``[[File:..]]``/``[[Image:..]]``
(caption = the last option that is not a layout keyword; it may contain
nested links and templates, parsed bracket-depth aware), ``infobox`` for
image parameters of templates (``| image = Name.jpg``, ``image1``,
``image_name``, ``photo``, ...), ``gallery`` for ``<gallery>`` lines. Only raster
and vector image files are kept (jpg, png, gif, svg, tif, webp, ...); audio,
video and documents linked with ``[[File:..]]`` are removed from the text but
not returned as images.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from ragvqa.types import ImageRef, Section

__all__ = ["clean_wikitext", "normalize_file_name", "parse_wikitext", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "jpe", "png", "gif", "svg", "tif", "tiff", "webp", "xcf", "bmp"}
)

# --- patterns -------------------------------------------------------------------------------

# An unclosed comment runs to the end of the text, as MediaWiki renders it.
_RE_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags whose whole content is not prose. Self-closing or paired; case-insensitive.
_DROP_TAGS = (
    "ref|references|math|chem|ce|score|timeline|syntaxhighlight|source|templatedata|"
    "mapframe|maplink|graph|hiero|inputbox|categorytree|charinsert|imagemap|gallery|"
    "templatestyles|section|indicator|noinclude"
)
# The content may not contain another opener of the same tag: an unclosed <ref name=x> then
# fails fast at the next <ref instead of scanning to the end of the text (quadratic).
_RE_DROP_TAG = re.compile(
    r"<(" + _DROP_TAGS + r")\b([^<>]*?)(?:/>|>((?:[^<]|<(?!\1\b))*?)</\1\s*>)", re.S | re.I
)
_RE_HEADING = re.compile(r"^(={2,6})[ \t]*(.+?)[ \t]*\1[ \t]*$", re.M)
# Openers/closers of constructs dropped whole: templates / parser functions and tables.
# A table closer must not be the "|}}" that ends a template whose last parameter is empty.
_RE_BRACE_TOKEN = re.compile(r"\{\{|\}\}|^[ \t:]*\{\||^[ \t]*\|\}(?!\})", re.M)
_RE_FILE_OPEN = re.compile(r"\[\[[ \t]*(?:[Ff][Ii][Ll][Ee]|[Ii][Mm][Aa][Gg][Ee])[ \t]*:")
_RE_LINK_TOKEN = re.compile(r"\[\[|\]\]")
_RE_SPLIT_TOKEN = re.compile(r"\[\[|\]\]|\{\{|\}\}|\|")
# Image parameters of infoboxes and image templates ({{Infobox ..| image = X.jpg}},
# {{Multiple image| image1 = ..}}, {{Infobox settlement| image_skyline = ..}}, ...).
_RE_INFOBOX_IMAGE = re.compile(
    r"\|[ \t]*(?:image\d*|image_?name|image_?file|img|photo\d*|photograph|picture|"
    r"image_skyline|image_photo|cover|cover_image|logo)[ \t]*=[ \t]*([^\n|}]*)",
    re.I,
)
_RE_INFOBOX_CAPTION = re.compile(
    r"\|[ \t]*(?:image_?caption|caption\d*|photo_?caption|imagecaption|img_?capt?)[ \t]*=[ \t]*([^\n]*)",
    re.I,
)
_RE_FILE_PREFIX = re.compile(r"^[ \t]*:?[ \t]*(?:file|image)[ \t]*:[ \t]*", re.I)
_RE_REF_LEFTOVER = re.compile(r"</?ref\b", re.I)
_RE_REF_TAG = re.compile(r"</?ref\b[^<>]*>", re.I)
_RE_HTML_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)\b[^<>]*>")
# Internal links after file links and templates are gone: [[target]] / [[target|label]]trail.
_RE_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
_RE_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[a-z]{1,8})*:")
# Neither part may run past a "[": an unclosed "[http://x" then fails at the next bracket
# instead of scanning (and backtracking) to the end of the line: linear, not quadratic.
_RE_EXTLINK = re.compile(
    r"\[(?:https?:|ftp:|//|mailto:|news:|irc:|ircs:|gopher:|sftp:)[^\s\[\]]*"
    r"(?:[ \t]+([^\[\]\n]*))?\]"
)
_RE_QUOTES = re.compile(r"'{2,}")
_RE_SWITCH = re.compile(r"__[A-Z]+__")
_RE_LINE_MARKUP = re.compile(r"^(?:[*#:;]+[ \t]*|-{4,}[ \t]*|[ \t]+)", re.M)
_RE_EMPTY_PARENS = re.compile(r"[ \t]*\([ \t,;:]*\)")
_RE_PAREN_PUNCT = re.compile(r"\([ \t,;:]*[,;:][ \t]*")
_RE_SPACES = re.compile(r"[ \t\xa0]{2,}")
_RE_SPACE_NL = re.compile(r"[ \t]+\n")
_RE_BLANK_LINES = re.compile(r"\n{3,}")
_RE_EXTENSION = re.compile(r"\.([A-Za-z0-9]{2,5})$")
_RE_SIZE_OPTION = re.compile(r"^(?:\d*(?:x\d+)?[ \t]*px|upright[ \t]*(?:=.*)?)$", re.I | re.S)
_RE_KEYED_OPTION = re.compile(
    r"^[ \t]*(?:alt|link|page|class|lang|thumb|thumbnail|upright|border|loop|start|end|"
    r"thumbtime|muted|disablecontrols)[ \t]*=",
    re.I,
)
_CAPTION_WINDOW = 1500  # characters after an infobox image parameter searched for its caption
_MAX_RESTARTS = 4  # rescans after unclosed {{ / {| before giving up on structure
_LAYOUT_KEYWORDS = frozenset(
    {
        "thumb",
        "thumbnail",
        "frame",
        "framed",
        "frameless",
        "border",
        "left",
        "right",
        "center",
        "centre",
        "none",
        "baseline",
        "sub",
        "super",
        "top",
        "text-top",
        "middle",
        "bottom",
        "text-bottom",
        "upright",
        "lossy",
        "lossless",
    }
)


# --- helpers --------------------------------------------------------------------------------


def normalize_file_name(name: str) -> str | None:
    """A file name as MediaWiki canonicalises it, or None if it is not an image.

    Strips a ``File:``/``Image:`` prefix and anything after ``|``, ``<``, ``{``
    or ``[``; underscores become spaces, runs of spaces collapse, the first
    letter is upper-cased. Returns None unless the name ends in an image
    extension (:data:`IMAGE_EXTENSIONS`, case-insensitive).
    """
    name = _RE_FILE_PREFIX.sub("", name, count=1)
    for stop in ("|", "<", "{{", "[[", "]]", "}}", "\n"):
        cut = name.find(stop)
        if cut >= 0:
            name = name[:cut]
    name = " ".join(name.replace("_", " ").split())
    if "&" in name:
        name = html.unescape(name)
    match = _RE_EXTENSION.search(name)
    if match is None or match.group(1).lower() not in IMAGE_EXTENSIONS:
        return None
    return name[0].upper() + name[1:]


def _split_options(inner: str) -> list[str]:
    """Split ``a|b|[[c|d]]|{{e|f}}`` at pipes that are not inside [[ ]] or {{ }}."""
    if "[[" not in inner and "{{" not in inner:
        return inner.split("|")
    parts: list[str] = []
    depth = 0
    start = 0
    for match in _RE_SPLIT_TOKEN.finditer(inner):
        token = match.group()
        if token == "|":
            if depth == 0:
                parts.append(inner[start : match.start()])
                start = match.end()
        elif token in ("[[", "{{"):
            depth += 1
        elif depth > 0:
            depth -= 1
    parts.append(inner[start:])
    return parts


def _caption_of(options: list[str]) -> str:
    """The caption among file-link options: the last one that is not a layout keyword."""
    for option in reversed(options):
        stripped = option.strip()
        if not stripped:
            continue
        if stripped.lower() in _LAYOUT_KEYWORDS:
            continue
        if _RE_SIZE_OPTION.match(stripped) or _RE_KEYED_OPTION.match(stripped):
            continue
        return clean_wikitext(stripped)
    return ""


def _match_links(text: str) -> dict[int, int]:
    """For every ``[[`` that is closed: its position -> the index just past its ``]]``.

    One pass with a stack (nesting aware), so unclosed openers cost nothing extra.
    """
    ends: dict[int, int] = {}
    stack: list[int] = []
    for match in _RE_LINK_TOKEN.finditer(text):
        if match.group() == "[[":
            stack.append(match.start())
        elif stack:
            ends[stack.pop()] = match.end()
    return ends


def _extract_file_links(text: str, images: list[tuple[int, ImageRef]]) -> str:
    """Append ``(position, ImageRef)`` for every File/Image link; return text without them."""
    pieces: list[str] = []
    pos = 0
    link_ends: dict[int, int] | None = None
    for match in _RE_FILE_OPEN.finditer(text):
        begin = match.start()
        if begin < pos:  # a file link nested in the caption of one already taken
            continue
        if link_ends is None:
            link_ends = _match_links(text)
        end = link_ends.get(begin, -1)
        if end < 0:
            # Unclosed: MediaWiki shows it as text; drop just the opener.
            pieces.append(text[pos:begin])
            pos = match.end()
            continue
        options = _split_options(text[match.end() : end - 2])
        name = normalize_file_name(options[0])
        if name is not None:
            images.append((begin, ImageRef(name, _caption_of(options[1:]), "file_link")))
        pieces.append(text[pos:begin])
        pos = end
    if pos == 0:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def _cut_at_close(value: str) -> str:
    """``value`` up to the first ``}}`` that closes more templates than it opened."""
    if "}}" not in value:
        return value
    depth = 0
    for match in _RE_SPLIT_TOKEN.finditer(value):
        token = match.group()
        if token == "{{":
            depth += 1
        elif token == "}}":
            depth -= 1
            if depth < 0:
                return value[: match.start()]
    return value


def _extract_infobox_images(text: str, images: list[tuple[int, ImageRef]]) -> None:
    """Append ``(position, ImageRef)`` for image parameters of templates in ``text``."""
    matches = list(_RE_INFOBOX_IMAGE.finditer(text))
    seen: set[str] = set()
    for i, match in enumerate(matches):
        value = match.group(1).strip()
        if not value or value.startswith("[["):  # a file link: found by _extract_file_links
            continue
        name = normalize_file_name(value)
        if name is None or name in seen:
            continue
        seen.add(name)
        # Its caption parameter follows it, before the next image parameter.
        window_end = match.end() + _CAPTION_WINDOW
        if i + 1 < len(matches):
            window_end = min(window_end, matches[i + 1].start())
        caption = ""
        cap = _RE_INFOBOX_CAPTION.search(text, match.end(), window_end)
        if cap is not None:
            # The value ends at the next top-level "|" or at the "}}" closing the template.
            caption = clean_wikitext(_cut_at_close(_split_options(cap.group(1))[0]))
        images.append((match.start(), ImageRef(name, caption, "infobox")))


def _extract_gallery(body: str, images: list[tuple[int, ImageRef]]) -> None:
    """Append ``(position, ImageRef)`` for every image line of <gallery>/<imagemap> blocks."""
    for match in _RE_DROP_TAG.finditer(body):
        tag = match.group(1).lower()
        if tag not in ("gallery", "imagemap") or not match.group(3):
            continue
        lines = match.group(3).split("\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            options = _split_options(line)
            name = normalize_file_name(options[0])
            if name is not None:
                caption = _caption_of(options[1:])
                images.append((match.start(), ImageRef(name, caption, "gallery")))
            if tag == "imagemap":  # only the first line names the image
                break


def _strip_braces(text: str) -> str:
    """Remove templates, parser functions and tables (nested, any depth).

    Unbalanced markup is handled the way MediaWiki shows it: an opener with no
    closer is dropped alone and the text after it kept; a stray closer is dropped.
    """
    if "{" not in text and "}" not in text:
        return text
    pieces: list[str] = []
    pos = 0  # start of the text not yet emitted (outside any construct)
    stack: list[tuple[str, int, int]] = []  # (kind, token start, token end)
    search_from = 0
    restarts = 0
    while True:
        for match in _RE_BRACE_TOKEN.finditer(text, search_from):
            token = match.group()
            if token == "{{":
                if not stack:
                    pieces.append(text[pos : match.start()])
                stack.append(("t", match.start(), match.end()))
            elif token == "}}":
                if stack and stack[-1][0] == "t":
                    _, _, opener_end = stack.pop()
                    if not stack:
                        rendered = _render_template(text[opener_end : match.start()])
                        if rendered:
                            pieces.append(rendered)
                        pos = match.end()
                elif not stack:  # stray closer
                    pieces.append(text[pos : match.start()])
                    pos = match.end()
            elif token.endswith("{|"):
                if not stack:
                    pieces.append(text[pos : match.start()])
                stack.append(("table", match.start(), match.end()))
            else:  # table closer
                if stack and stack[-1][0] == "table":
                    stack.pop()
                    if not stack:
                        pos = match.end()
                elif not stack:
                    pieces.append(text[pos : match.start()])
                    pos = match.end()
        if not stack:
            break
        # The outermost construct never closed: drop only its opener, rescan after it.
        _, _, opener_end = stack[0]
        stack.clear()
        pos = opener_end
        search_from = opener_end
        restarts += 1
        if restarts > _MAX_RESTARTS:
            # Pathological markup (many unclosed openers): stop rescanning, which would
            # be quadratic, and just drop the remaining brace tokens.
            pieces.append(_RE_BRACE_TOKEN.sub("", text[pos:]))
            return "".join(pieces)
    pieces.append(text[pos:])
    return "".join(pieces)


def _params(inner: str) -> tuple[list[str], dict[str, str]]:
    """Positional and named parameters of a template body (after its name), rendered."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in _split_options(inner)[1:]:
        key = _RE_NAMED_PARAM.match(part)
        if key is not None:
            named[key.group(1).strip().lower()] = _strip_braces(part[key.end() :]).strip()
        else:
            positional.append(_strip_braces(part).strip())
    return positional, named


def _first(inner: str) -> str:
    positional, named = _params(inner)
    if positional:
        return positional[0]
    return named.get("text", named.get("1", ""))


def _last(inner: str) -> str:
    positional, _ = _params(inner)
    return positional[-1] if positional else ""


def _lang(inner: str) -> str:
    positional, named = _params(inner)
    return positional[1] if len(positional) > 1 else named.get("text", "")


def _convert(inner: str) -> str:
    """{{convert|100|km|mi}} -> "100 km"; {{convert|1|to|2|m}} -> "1 to 2 m"."""
    positional, _ = _params(inner)
    if not positional:
        return ""
    if len(positional) >= 4 and positional[1] in _RANGE_WORDS:
        word = positional[1]
        joiner = "–" if word in ("-", "–") else f" {word} "
        return f"{positional[0]}{joiner}{positional[2]} {positional[3]}"
    unit = positional[1] if len(positional) > 1 else ""
    return f"{positional[0]} {unit}".strip()


def _date(inner: str) -> str:
    """{{birth date|1879|3|14}} -> "14 March 1879" (df=y) or "March 14, 1879"."""
    positional, named = _params(inner)
    numbers = [p for p in positional if p.isdigit()][:3]
    if not numbers:
        return " ".join(positional)
    year = numbers[0]
    if len(numbers) == 1:
        return year
    month_index = int(numbers[1])
    month = _MONTHS[month_index - 1] if 1 <= month_index <= 12 else numbers[1]
    if len(numbers) == 2:
        return f"{month} {year}"
    day = str(int(numbers[2]))
    if named.get("df", "").lower() in ("y", "yes", "1", "true"):
        return f"{day} {month} {year}"
    return f"{month} {day}, {year}"


def _as_of(inner: str) -> str:
    positional, _ = _params(inner)
    return "As of " + " ".join(reversed(positional[:3])) if positional else ""


def _circa(inner: str) -> str:
    positional, _ = _params(inner)
    return "c. " + positional[0] if positional else "c."


def _frac(inner: str) -> str:
    positional, _ = _params(inner)
    if len(positional) == 3:
        return f"{positional[0]} {positional[1]}/{positional[2]}"
    return "/".join(positional)


def _join(inner: str) -> str:
    positional, _ = _params(inner)
    return "".join(positional)


def _quote(inner: str) -> str:
    positional, named = _params(inner)
    return named.get("text", named.get("quote", positional[0] if positional else ""))


# Inline templates whose output is text the reader needs (numbers with units, dates,
# foreign names); every other template is dropped. Names are lower case, spaces not "_".
_RENDERERS: dict[str, Callable[[str], str]] = {
    "convert": _convert,
    "cvt": _convert,
    "lang": _lang,
    "small": _first,
    "smaller": _first,
    "big": _first,
    "nowrap": _first,
    "nobr": _first,
    "nobreak": _first,
    "flag": _first,
    "flagcountry": _first,
    "vanchor": _first,
    "visible anchor": _first,
    "nihongo": _first,
    "ill": _first,
    "abbr": _first,
    "keypress": _first,
    "angbr": _first,
    "sic": _first,
    "transl": _last,
    "transliteration": _last,
    "birth date": _date,
    "death date": _date,
    "birth date and age": _date,
    "death date and age": _date,
    "birth year and age": _date,
    "start date": _date,
    "end date": _date,
    "dts": _date,
    "as of": _as_of,
    "circa": _circa,
    "c.": _circa,
    "frac": _frac,
    "sfrac": _frac,
    "chem": _join,
    "quote": _quote,
    "blockquote": _quote,
    "·": lambda _: " · ",
    "ndash": lambda _: "–",
    "mdash": lambda _: "—",
    "snd": lambda _: " – ",
    "spaced ndash": lambda _: " – ",
    "nbsp": lambda _: " ",
    "'": lambda _: "'",
}
_RE_NAMED_PARAM = re.compile(r"^\s*([\w -]+?)\s*=")
_RANGE_WORDS = frozenset({"-", "–", "to", "and", "or", "x", "by", "+/-", "±"})
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _render_template(inner: str) -> str:
    """The text a template shows, for the few in :data:`_RENDERERS`; "" for all others."""
    bar = inner.find("|")
    name = (inner if bar < 0 else inner[:bar]).strip().lower()
    renderer = _RENDERERS.get(name)
    if renderer is None:
        if name.startswith("lang-"):
            renderer = _first
        elif name.startswith("formatnum:"):
            return name[len("formatnum:") :].strip()
        else:
            return ""
    return renderer(inner)


def _link_repl(match: re.Match[str]) -> str:
    target = match.group(1)
    label = match.group(2)
    if target[:1] == ":":  # [[:Category:X]] / [[:File:X]] are plain links
        target = target[1:]
    elif label is None and _RE_INTERLANGUAGE.match(target):
        return ""  # interlanguage link [[de:Foo]]
    elif target[:9].lower() == "category:" or target[:10].lower() == "category :":
        return ""
    if label:
        return label
    if label is not None:  # pipe trick [[Foo (bar)|]] shows "Foo"
        return target.split(" (", 1)[0].split(",", 1)[0].split(":", 1)[-1]
    return target


def _tag_repl(match: re.Match[str]) -> str:
    return "\n" if match.group(1).lower() == "br" else ""


def _finish(text: str) -> str:
    """Inline markup -> text, then whitespace normalisation. No templates left at this point."""
    if "<" in text:
        text = _RE_HTML_TAG.sub(_tag_repl, text)
    if "[[" in text:
        text = _RE_LINK.sub(_link_repl, text)
        if "[[" in text:  # links nested in link labels (invalid but seen)
            text = _RE_LINK.sub(_link_repl, text)
            text = text.replace("[[", "").replace("]]", "")
    if "[" in text:
        text = _RE_EXTLINK.sub(r"\1", text)
    if "''" in text:
        text = _RE_QUOTES.sub("", text)
    if "__" in text:
        text = _RE_SWITCH.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    if "\xa0" in text:
        text = text.replace("\xa0", " ")
    if "{{" in text or "}}" in text:  # leftovers of malformed markup
        text = text.replace("{{", "").replace("}}", "")
    if "<" in text and _RE_REF_LEFTOVER.search(text):  # "<ref" that never became a tag
        text = _RE_REF_LEFTOVER.sub("", text)
    text = _RE_LINE_MARKUP.sub("", text)
    if "(" in text:
        text = _RE_EMPTY_PARENS.sub("", text)
        text = _RE_PAREN_PUNCT.sub("(", text)
    text = _RE_SPACES.sub(" ", text)
    text = _RE_SPACE_NL.sub("\n", text)
    if "\n\n\n" in text:
        text = _RE_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _drop_tags(text: str) -> str:
    if "<" not in text:
        return text
    text = _RE_DROP_TAG.sub("", text)
    if "<ref" in text or "<REF" in text:
        # An unpaired <ref name=x> opener: drop the tag alone.
        text = _RE_REF_TAG.sub("", text)
    return text


def clean_wikitext(text: str) -> str:
    """Plain text of a wikitext fragment (a caption, a heading, a paragraph).

    Args:
        text: wikitext (XML entities already decoded, as a dump reader gives it).

    Returns:
        the text without markup; lines kept, runs of blank lines collapsed.
    """
    if "<!--" in text:
        text = _RE_COMMENT.sub("", text)
    text = _drop_tags(text)
    if "[[" in text:
        text = _extract_file_links(text, [])
    return _finish(_strip_braces(text))


def _section_body(body: str) -> tuple[str, list[ImageRef]]:
    """Clean text and images (in order of appearance) of one section's wikitext."""
    found: list[tuple[int, ImageRef]] = []
    if "<" in body:
        lowered_has_gallery = "<gallery" in body or "<imagemap" in body or "<GALLERY" in body
        if lowered_has_gallery:
            _extract_gallery(body, found)
        body = _drop_tags(body)
    if "=" in body and "|" in body:
        _extract_infobox_images(body, found)
    if "[[" in body:
        body = _extract_file_links(body, found)
    text = _finish(_strip_braces(body))
    if not found:
        return text, []
    found.sort(key=lambda item: item[0])
    images: list[ImageRef] = []
    seen: set[str] = set()
    for _, image in found:
        if image.ref not in seen:  # the same file twice in a section (infobox + link)
            seen.add(image.ref)
            images.append(image)
    return text, images


def parse_wikitext(title: str, wikitext: str) -> tuple[list[Section], ImageRef | None]:
    """Split a page's wikitext into clean sections with their images.

    Args:
        title: the page title; becomes the lead section's title.
        wikitext: the page source (XML entities decoded).

    Returns:
        ``(sections, page_image)``: sections in page order, ``sections[0]`` is
        the lead (level 1, title = page title), then one per heading of level
        2..6 (flat, ``level`` = number of ``=``); each has clean ``text`` and the
        ``images`` that appear in it. ``page_image`` is the first infobox image
        of the page (usually in the lead), else None.
    """
    if "<!--" in wikitext:
        wikitext = _RE_COMMENT.sub("", wikitext)
    sections: list[Section] = []
    heading_title = title
    level = 1
    start = 0
    index = 0
    page_image: ImageRef | None = None
    for match in _RE_HEADING.finditer(wikitext):
        text, images = _section_body(wikitext[start : match.start()])
        sections.append(Section(index, heading_title, text, images, level))
        index += 1
        raw_title = match.group(2)
        heading_title = raw_title.strip()
        if any(c in raw_title for c in "[{<'&_"):
            heading_title = " ".join(clean_wikitext(raw_title).split())
        level = len(match.group(1))
        start = match.end()
    text, images = _section_body(wikitext[start:])
    sections.append(Section(index, heading_title, text, images, level))
    for section in sections:
        for image in section.images:
            if image.kind == "infobox":
                page_image = image
                break
        if page_image is not None:
            break
    return sections, page_image
