//! `kustomize::yaml` output read back by PyYAML, a YAML 1.1 reader (the
//! YAML version Kubernetes' own readers follow): over many tricky strings,
//! in every position a string can take, the documents read back must be
//! exactly the values written.

mod support;

use serde_json::{Map, Value, json};
use support::pyyaml;

/// Strings each YAML reader has an opinion about.
#[rustfmt::skip]
const TRICKY: &[&str] = &[
    "", " ", "  ", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True",
    "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "~", "null", "Null",
    "NULL", "0", "00", "-0", "+0", "7", "-7", "+7", "0b101", "0o17", "017", "0x1F", "0x_1F",
    "1_000", "1:20", "1:20:30", "-1:20", "1:20.5", "1.5", "1.", ".5", "-.5", "+.5", "1e3", "1E3",
    "1e+3", "1.0e+3", "6.8523015e+5", ".inf", "-.inf", "+.inf", ".Inf", ".INF", ".nan", ".NaN",
    ".NAN", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5",
    "2001-12-15T02:59:43.1Z", "1.2.3", "1.26", "<<", "=", "-", "--", "---", "...", "- a", "-a",
    "--flag=x", "?", "? a", "?a", ":", ":a", "a:", "a: b", "a:b", "a :b", ",", ",a", "[", "]",
    "[a]", "{", "}", "{a: b}", "#", "#a", "a #b", "a#b", "&a", "*a", "!a", "!!str", "|", "|-",
    ">", ">-", "'", "''", "'a'", "\"", "\"a\"", "%", "%YAML", "@", "`", "a b", " a", "a ",
    "a\tb", "\t", "a\nb", "a\n", "a\n\n", "\na", "\n", "\n\n", " a\nb", "a\n b", "a\n\n\nb",
    "a\n \nb", "a\n  ", "a \nb ", "line1\nline2\n", "#x\n#y\n", "---\n...\n", "- a\n- b\n",
    "a: b\nc: d\n", "a\r\nb", "a\rb", "\u{85}", "a\u{85}b", "a\u{2028}b", "a\u{2029}b",
    "\u{feff}a", "a\u{feff}", "\u{7f}", "\u{80}", "\u{9f}", "\u{a0}", "a\u{a0}", "\0", "\u{1}",
    "\u{1b}[0m", "\u{fffd}", "\u{fffe}", "\u{ffff}", "é", "grüße", "日本語", "😀", "e\u{301}",
    "\\", "\\n", "a\\", "\"\\\"", "$(VAR)", "${VAR}", "%{x}", "http://example.com:80/a?b=c#d",
    "nginx:1.25", "kubernetes.io/name", "app.kubernetes.io/part-of", "a=b", "<a>", "a<<b",
];

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Strings glued together from pieces of the tricky ones.
fn generated(n: usize) -> Vec<String> {
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "y", "yes", "on", "0", "1", "9", ".", "-", "+", "_", ":", " ", "  ", "#", "\n", "\t", "\"",
        "'", "\\", "e", "E", "x", "0x", "0o", "0b", "1:2", "2001-12-14", "~", "null", "<<", "=",
        "é", "\u{2028}", "\u{85}", "\u{7f}", "\u{1}", "---", "...", "|", ">", "!", "&", "*", "%",
        "@", "`", "[", "]", "{", "}", ",", "?", "a", "b", "inf", "nan", "t", "Z", "\u{a0}", "😀",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let len = 1 + rng.next() % 5;
            (0..len).map(|_| rng.pick(PIECES)).collect()
        })
        .collect()
}

/// Documents that put `strings` everywhere a string can go: map values and
/// keys, sequence items, maps inside sequences (where literal blocks are
/// indented differently), at a few depths.
fn documents(strings: &[String]) -> Vec<Value> {
    strings
        .chunks(40)
        .enumerate()
        .map(|(i, chunk)| {
            let mut data = Map::new();
            let mut keyed = Map::new();
            for (j, s) in chunk.iter().enumerate() {
                data.insert(format!("k{j}"), Value::String(s.clone()));
                keyed.insert(s.clone(), json!(j));
            }
            let items: Vec<Value> = chunk.iter().map(|s| json!(s)).collect();
            let in_maps: Vec<Value> = chunk
                .iter()
                .map(|s| json!({"name": s, "value": s, "nested": [s, {"deep": s}]}))
                .collect();
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "labels": keyed, "annotations": data.clone()},
                "data": data,
                "items": items,
                "maps": in_maps,
                "lists": [chunk.iter().map(|s| json!([s, [s]])).collect::<Vec<_>>()],
            })
        })
        .collect()
}

#[test]
fn tricky_strings_read_back_unchanged_by_a_yaml_1_1_reader() {
    let strings: Vec<String> = TRICKY.iter().map(|s| (*s).to_owned()).collect();
    let docs = documents(&strings);
    let text = kustomize::yaml::to_string(&docs);
    assert_eq!(pyyaml(&text), docs, "PyYAML read something else:\n{text}");
}

#[test]
fn generated_strings_read_back_unchanged_by_a_yaml_1_1_reader() {
    let docs = documents(&generated(4000));
    let text = kustomize::yaml::to_string(&docs);
    let back = pyyaml(&text);
    assert_eq!(back.len(), docs.len());
    for (got, want) in back.iter().zip(&docs) {
        assert_eq!(got, want, "PyYAML read something else");
    }
}

#[test]
fn scalars_of_every_type_read_back_unchanged() {
    let doc = json!({
        "ints": [0, 1, -1, 42, i64::MAX, i64::MIN, u64::MAX],
        "floats": [0.5, -0.25, 1.0, -0.0, 1e21, 1.5e-7, 1e100, 123456789.125, f64::MAX, 5e-324],
        "bools": [true, false],
        "null": null,
        "empty": {"map": {}, "list": [], "string": ""},
        "long key": {
            "k".repeat(1100): "v",
            "x".repeat(990): ["a\nb"],
            "y".repeat(1050): ["a", "b\nc", {"d": "e\n"}],
            "z".repeat(1050): {"a": ["b"]},
        },
    });
    let docs = vec![doc, json!({"second": "document"}), json!({})];
    let text = kustomize::yaml::to_string(&docs);
    assert_eq!(pyyaml(&text), docs, "PyYAML read something else:\n{text}");
}
