"""The fast wikitext cleaner: exact outputs for each kind of markup."""

from __future__ import annotations

import pytest

from ragvqa.kb.wikitext import clean_wikitext, normalize_file_name, parse_wikitext
from ragvqa.types import ImageRef


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("A {{foo|{{bar|x}}|y={{baz}}}} B", "A B"),
        ("A {{#if: {{{1|}}} | yes | no }} B", "A B"),
        (
            'Text<ref name="a">cite {{cite web|url=http://x}}</ref> more<ref name="b" />.',
            "Text more.",
        ),
        ("Text<ref>unclosed and more", "Textunclosed and more"),
        (
            "before\n{| class=wikitable\n|-\n| a || b\n|-\n| {{x|y}} || [[c]]\n|}\nafter",
            "before\n\nafter",
        ),
        ("x\n{|\n|\n{|\n| inner\n|}\n|}\ny", "x\n\ny"),
        ("{{Infobox\n| a = b\n|}}\nText", "Text"),
        ("a<!-- hidden [[x]] {{y}} -->b", "ab"),
        ("a<!-- never closed\nb", "a"),
        ("[[Foo|bar]]s and [[Baz]] and [[:Category:X|cats]]", "bars and Baz and cats"),
        ("Text.\n[[Category:Physics|Sort]]\n[[de:Physik]]\n[[zh-min-nan:Bu̍t-lí-ha̍k]]", "Text."),
        ("[[wikt:word|word]] and [[Foo (band)|]]", "word and Foo"),
        (
            "[http://example.com/a?b=c Example site] and [https://x.org] and http://bare.org",
            "Example site and and http://bare.org",
        ),
        ("'''Bold''' and ''italic'' and '''''both'''''", "Bold and italic and both"),
        ('a<br/>b <span style="x">c</span> &amp; &nbsp;d &ndash; e', "a\nb c & d – e"),
        ("x <math>\\frac{1}{2}</math> y <sup>2</sup>", "x y 2"),
        (
            "* one [[a|A]]\n** two\n# three\n: indented\n; term : def\n----\nend",
            "one A\ntwo\nthree\nindented\nterm : def\n\nend",
        ),
        ("Einstein ({{IPA|x}}; {{lang|de|y}}) was", "Einstein (y) was"),
        ("Einstein ({{IPAc-en|x}}; {{IPA-de|y}}; 14 March 1879)", "Einstein (14 March 1879)"),
        ("{{IPAc-en|x}} is ({{respell|y}}) odd", "is odd"),
        ("an altitude of {{convert|100|km|mi|sp=us}}.", "an altitude of 100 km."),
        ("{{convert|3|to|5|ft|m}} and {{cvt|1|-|2|kg}}", "3 to 5 ft and 1–2 kg"),
        (
            "born {{birth date|1879|3|14}}; died {{death date and age|1955|4|18|1879|3|14|df=y}}",
            "born March 14, 1879; died 18 April 1955",
        ),
        ("{{As of|2013|June|8}}, a total", "As of 8 June 2013, a total"),
        (
            "{{lang-de|Relativitätstheorie}} and {{nowrap|{{convert|50|mi|km}} high}}",
            "Relativitätstheorie and 50 mi high",
        ),
        ("{{chem|H|2|O}} {{frac|1|2}} {{circa|1900}} {{formatnum:12345}}", "H2O 1/2 c. 1900 12345"),
        ("{{quote|text=To be, or not}} {{Citation needed|date=May 2016}}", "To be, or not"),
        ("[[Foo|the {{small|big}} bar]]", "the big bar"),
        ("[[Foo|the {{Citation needed}} bar]]", "the bar"),
        ("Hello {{unclosed and world", "Hello unclosed and world"),
        ("stray }} here", "stray here"),
        ("__NOTOC__Start", "Start"),
        ("[[File:Foo.jpg|thumb|A [[b|c]] caption]] Text", "Text"),
        ("a\n\n\n\nb   c \nd", "a\n\nb c\nd"),
    ],
)
def test_clean_wikitext(wikitext: str, expected: str) -> None:
    assert clean_wikitext(wikitext) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("File:Foo_bar.jpg", "Foo bar.jpg"),
        ("Image: foo  bar.PNG|thumb", "Foo bar.PNG"),
        ("  example.svg <!-- x -->", "Example.svg"),
        ("Portrait.jpeg{{!}}", "Portrait.jpeg"),
        ("AT&amp;T logo.svg", "AT&T logo.svg"),
        ("Sound.ogg", None),
        ("none", None),
        ("", None),
    ],
)
def test_normalize_file_name(name: str, expected: str | None) -> None:
    assert normalize_file_name(name) == expected


PAGE = """{{Infobox person
| name = Jane Roe
| image = File:Jane_Roe_1900.JPG <!-- the portrait -->
| caption = Roe in [[Paris]], 1900
| birth_date = {{birth date|1870|1|1}}
}}
[[File:Lead_photo.jpg|thumb|right|upright=1.2|Lead photo with [[Nested link|a nested]] link and {{tmpl|x}}]]
'''Jane Roe''' was a [[chemist|chemical]] researcher.<ref>{{cite book|title=T}}</ref>

== Early life ==
Born in [[Lyon]].
[[Image:Childhood home.png|alt=A house|Her [[Home (place)|home]]]]

=== School ===
{| class="wikitable"
| [[File:In_table.gif|50px]] || cell
|}
She studied.

== Gallery ==
<gallery mode="packed">
File:Gallery one.jpg|First ''caption''
Gallery two.png|Second [[caption]]
Recording.ogg|audio is not an image
</gallery>
== [[Legacy|Her legacy]] ==
{{Multiple image
| image1 = Statue.jpg
| image2 = Plaque.svg
}}
Remembered.
[[Category:Chemists]]
[[fr:Jane Roe]]
"""


def test_parse_wikitext_sections_and_images() -> None:
    sections, page_image = parse_wikitext("Jane Roe", PAGE)
    assert [(s.index, s.title, s.level) for s in sections] == [
        (0, "Jane Roe", 1),
        (1, "Early life", 2),
        (2, "School", 3),
        (3, "Gallery", 2),
        (4, "Her legacy", 2),
    ]
    assert [s.text for s in sections] == [
        "Jane Roe was a chemical researcher.",
        "Born in Lyon.",
        "She studied.",
        "",
        "Remembered.",
    ]
    infobox = ImageRef("Jane Roe 1900.JPG", "Roe in Paris, 1900", "infobox")
    assert page_image == infobox
    assert sections[0].images == [
        infobox,
        ImageRef("Lead photo.jpg", "Lead photo with a nested link and", "file_link"),
    ]
    assert sections[1].images == [ImageRef("Childhood home.png", "Her home", "file_link")]
    assert sections[2].images == [ImageRef("In table.gif", "", "file_link")]
    assert sections[3].images == [
        ImageRef("Gallery one.jpg", "First caption", "gallery"),
        ImageRef("Gallery two.png", "Second caption", "gallery"),
    ]
    assert sections[4].images == [
        ImageRef("Statue.jpg", "", "infobox"),
        ImageRef("Plaque.svg", "", "infobox"),
    ]


def test_parse_wikitext_without_headings_or_images() -> None:
    sections, page_image = parse_wikitext("Plain", "Just '''text'''.")
    assert page_image is None
    assert len(sections) == 1
    assert (sections[0].title, sections[0].text, sections[0].images) == ("Plain", "Just text.", [])


def test_heading_inside_comment_is_not_a_section() -> None:
    sections, _ = parse_wikitext("T", "Lead\n<!--\n== Hidden ==\n-->\n== Shown ==\nBody")
    assert [s.title for s in sections] == ["T", "Shown"]
    assert [s.text for s in sections] == ["Lead", "Body"]


def test_same_image_twice_in_a_section_is_kept_once() -> None:
    text = (
        "{{Infobox\n| image = [[File:A.jpg|200px]]\n| image2 = A.jpg\n}}\n[[File:A.jpg|thumb|cap]]"
    )
    sections, _ = parse_wikitext("T", text)
    assert [i.ref for i in sections[0].images] == ["A.jpg"]


@pytest.mark.timeout(60)  # a hang guard, not a speed assertion
@pytest.mark.parametrize(
    "unit",
    [
        "<ref name=a>",
        "<ref ",
        "<a ",
        "{{",
        "{|\n",
        "[[File:a.jpg|",
        "[http://a ",
        "<!--",
        "{{Infobox|image=a.jpg|caption=",
    ],
)
def test_unbalanced_markup_stays_linear(unit: str) -> None:
    # 20,000 unclosed openers on one line: naive regexes or rescans go quadratic here.
    sections, _ = parse_wikitext("T", unit * 20_000 + " end")
    text = sections[-1].text
    assert "{{" not in text and "[[" not in text and "<ref" not in text.lower()
