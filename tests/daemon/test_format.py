"""docker's --format (Go text/template subset), table alignment, human sizes and times."""

from __future__ import annotations

import pytest
from sampan.cli import format as fmt

DATA = {
    "Id": "sha256:" + "ab" * 32,
    "RepoTags": ["busybox:latest", "busybox:1.36"],
    "Size": 4261375,
    "Ratio": 0.5,
    "Big": 1234567.0,
    "Empty": [],
    "Null": None,
    "Yes": True,
    "Config": {"Env": ["PATH=/bin", "A=1"], "Labels": {"b": "2", "a": "1"}, "User": ""},
    "Name": "Busy<Box>&Co",
}


@pytest.mark.parametrize("template,expected", [
    ("{{.Size}}", "4261375"),
    ("{{.Ratio}} {{.Big}}", "0.5 1.234567e+06"),
    ("{{.Config.Env}}", "[PATH=/bin A=1]"),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{.Missing}}", "<no value>"),
    ("{{.Null}}", "<nil>"),
    ("{{.Config.Missing.Deeper}}", "<no value>"),
    ("{{.Yes}}", "true"),
    ("{{json .Config.Labels}}", '{"a":"1","b":"2"}'),
    ("{{json .Name}}", '"Busy\\u003cBox\\u003e\\u0026Co"'),
    ("{{json .Empty}} {{json .Null}}", "[] null"),
    ("{{.Name | lower}} {{upper .Name}}", "busy<box>&co BUSY<BOX>&CO"),
    ("{{join .RepoTags \", \"}}", "busybox:latest, busybox:1.36"),
    ("{{index .RepoTags 1}}", "busybox:1.36"),
    ("{{index .Config.Labels \"a\"}}", "1"),
    ("{{index . \"Config\" | json}}", ('{"Env":["PATH=/bin","A=1"],"Labels":{"a":"1","b":"2"},'
                                      '"User":""}')),
    ("{{range .RepoTags}}[{{.}}]{{end}}", "[busybox:latest][busybox:1.36]"),
    ("{{range $i, $t := .RepoTags}}{{$i}}={{$t}};{{end}}", "0=busybox:latest;1=busybox:1.36;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}{{$v}}{{end}}", "a1b2"),
    ("{{range .Empty}}x{{else}}none{{end}}", "none"),
    ("{{if .Yes}}y{{else}}n{{end}}", "y"),
    ("{{if .Empty}}y{{else if .Config.User}}u{{else}}n{{end}}", "n"),
    ("{{if eq .Size 4261375}}big{{end}}", "big"),
    ("{{if and .Yes (gt .Size 10)}}ok{{end}}", "ok"),
    ("{{if or .Empty .Null}}t{{else}}f{{end}}", "f"),
    ("{{if not .Empty}}empty{{end}}", "empty"),
    ("{{if ne .Config.User \"root\"}}not root{{end}}", "not root"),
    ("{{with .Config}}{{.Env}}{{end}}", "[PATH=/bin A=1]"),
    ("{{with .Missing}}x{{else}}nothing{{end}}", "nothing"),
    ("{{printf \"%-6s|%5d|%.2f|%v|%q\" \"ab\" 42 3.14159 .Yes \"x\"}}",
     "ab    |   42|3.14|true|\"x\""),
    ("{{printf \"%s\" .RepoTags}}", "[busybox:latest busybox:1.36]"),
    ("{{len .RepoTags}}", "2"),
    ("{{$n := .Size}}{{$n}}", "4261375"),
    ("{{$x := 1}}{{if .Yes}}{{$x = 2}}{{end}}{{$x}}", "2"),
    ("a  {{- .Yes -}}  b", "atrueb"),
    ("{{/* a comment */}}x", "x"),
    ("{{- /* trimmed comment */ -}} x", "x"),
    ("{{(index .RepoTags 0) | upper}}", "BUSYBOX:LATEST"),
    ("{{range $.RepoTags}}{{$.Size}}{{end}}", "42613754261375"),
    ("{{\"literal\"}} {{`raw`}} {{3}}", "literal raw 3"),
    ("{{title \"hello world\"}} {{split \"a,b\" \",\"}} {{truncate \"abcdef\" 3}}",
     "Hello World [a b] abc"),
    ("{{pad \"x\" 1 2}}|", " x  |"),
])
def test_template(template, expected):
    assert fmt.Template(template).execute(DATA) == expected


@pytest.mark.parametrize("template,message", [
    ("{{define \"x\"}}y{{end}}", "{{define}} is not supported"),
    ("{{template \"x\"}}", "{{template}} is not supported"),
    ("{{foo .Id}}", 'function "foo" not defined'),
    ("{{.Id", "unclosed action"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{if .Yes}}x", "missing {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ("{{.Id | }}", "missing command"),
    ("{{$undefined}}", 'undefined variable "$undefined"'),
    ("{{index .RepoTags 5}}", "index out of range: 5"),
    ("{{.Id 1}}", "can't give argument to non-function"),
    ("{{}}", "missing value"),
    ("{{range 3.5}}{{end}}", "range can't iterate over 3.5"),
])
def test_template_errors(template, message):
    with pytest.raises(fmt.FormatError) as e:
        fmt.Template(template).execute(DATA)
    assert message in str(e.value)


def test_parse_errors_are_prefixed_like_docker():
    with pytest.raises(fmt.FormatError) as e:
        fmt.render("{{nope}}", {})
    assert str(e.value) == 'template parsing error: template: :1: function "nope" not defined'


def test_row_strict_fields():
    row = fmt.Row("image", {"ID": "abc", "Size": lambda: "1kB"})
    assert fmt.Template("{{.ID}} {{.Size}}").execute(row) == "abc 1kB"
    with pytest.raises(fmt.FormatError) as e:
        fmt.Template("{{.Nope}}").execute(row)
    assert "can't evaluate field Nope in type image" in str(e.value)
    assert fmt.Template("{{json .}}").execute(row) == '{"ID":"abc","Size":"1kB"}'


def test_render_list_table_json_and_plain():
    rows = [fmt.Row("image", {"Repository": "busybox", "Tag": "latest", "ID": "abc"}),
            fmt.Row("image", {"Repository": "localhost:5000/team/app", "Tag": "1.0",
                              "ID": "def"})]
    headers = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID"}
    default = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}"
    out = fmt.render_list(None, rows, default, headers)
    assert out == ("REPOSITORY                TAG       IMAGE ID\n"
                   "busybox                   latest    abc\n"
                   "localhost:5000/team/app   1.0       def\n")
    assert fmt.render_list("table", rows, default, headers) == out
    assert fmt.render_list("{{.ID}}", rows, default, headers) == "abc\ndef\n"
    assert fmt.render_list("json", rows, default, headers).splitlines()[0] == (
        '{"ID":"abc","Repository":"busybox","Tag":"latest"}')
    # docker turns a literal \t in the format into a tab
    assert fmt.render_list("table {{.ID}}\\t{{.Tag}}", rows, default, headers) == (
        "IMAGE ID   TAG\nabc        latest\ndef        1.0\n")
    # an empty list still prints the header
    assert fmt.render_list(None, [], default, headers) == "REPOSITORY   TAG       IMAGE ID\n"


def test_tabwriter_blocks_like_go():
    # cells are padded per column block: consecutive lines having that column
    text = "a\tbb\tc\nxxxxxxxxxxxx\ty\tz\nsingle line\n"
    assert fmt.tabulate(text) == ("a              bb        c\n"
                                  "xxxxxxxxxxxx   y         z\n"
                                  "single line\n")


@pytest.mark.parametrize("size,text", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (4261375, "4.26MB"), (12345678, "12.3MB"),
    (1_500_000_000, "1.5GB"), (999_999, "1e+03kB"),
])
def test_human_size(size, text):
    assert fmt.human_size(size) == text


def test_bytes_size():
    assert fmt.bytes_size(8 * 1024**3) == "8GiB"
    assert fmt.bytes_size(25274531840) == "23.54GiB"


@pytest.mark.parametrize("seconds,text", [
    (0.5, "Less than a second"), (1, "1 second"), (45, "45 seconds"), (60, "About a minute"),
    (150, "2 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"),
    (3 * 86400, "3 days"), (14 * 86400, "2 weeks"), (90 * 86400, "3 months"),
    (3 * 365 * 86400, "3 years"),
])
def test_human_duration(seconds, text):
    assert fmt.human_duration(seconds) == text


def test_time_ago_and_parse_time():
    now = 1_700_000_000
    assert fmt.time_ago(now - 14 * 86400, now=now) == "2 weeks ago"
    t = fmt.parse_time("2023-11-14T22:13:20.123456789Z")
    assert abs(t - 1_700_000_000.123456789) < 1e-3
    assert fmt.parse_time("2023-11-15T00:13:20+02:00") == 1_700_000_000
    assert fmt.time_ago("") == "N/A"
    assert fmt.short_id("sha256:" + "ab" * 32) == "abababababab"
    assert fmt.short_id("sha256:" + "ab" * 32, trunc=False).startswith("sha256:")
