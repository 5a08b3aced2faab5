//! kubectl-style JSONPath (the template language of `kubectl get -o
//! jsonpath=...` and client-go's `util/jsonpath`), for picking values out of
//! JSON documents: metric-source webhooks (`jsonPath`) and, later, version
//! `fieldPath`s.
//!
//! A template is one `{...}` expression (the braces may be left out). What
//! it understands, as kubectl does:
//!
//! | syntax | meaning |
//! |---|---|
//! | `$` / `@` | the root / the current node (`{$}` is the whole document) |
//! | `.name`, `['name']`, `["name"]` | an object member; `\.` escapes a dot in `.name` |
//! | `['a','b']` | several members |
//! | `..name` | `name` at any depth (recursive descent) |
//! | `*`, `.*`, `[*]` | every member of an object or element of an array |
//! | `[n]`, `[-n]`, `[i,j]` | array elements by index (negative counts from the end) |
//! | `[start:end:step]` | an array slice, Python style |
//! | `[?(@.a.b == 'x')]` | array elements for which the filter holds: `==`, `!=`, `<`, `<=`, `>`, `>=` against a number, a quoted string, `true`/`false` or another path; a bare path tests that it exists |
//!
//! A braceless template (`.remaining`) is read as if it were braced, as
//! kubectl's custom columns do.
//!
//! Evaluation follows kubectl where it is strict: an index outside the
//! array and a comparison between values of different types (a number and
//! a string) are errors. A member that is missing, or a step that does not
//! apply to a node (a member of an array, an index into an object), matches
//! nothing there; callers decide what "nothing" or "several" means for
//! them. A quoted name is taken as written (`['app.kubernetes.io/name']`
//! finds that label; kubectl splits it at the dots and finds nothing).
//! Slices are clamped to the array, as in Python (kubectl refuses an
//! end past the array), and their step must be positive, as in kubectl.

use std::cell::Cell;

use serde_json::Value;

/// How deep filters may nest (`[?(@.a[?(@.b)])]` is two); deeper templates
/// are refused when parsed, before the recursive parser runs out of stack.
const MAX_FILTER_DEPTH: usize = 32;

/// The work one [`JsonPath::find`] may do: every node a step is applied to
/// and every node it selects counts one, filters included. Chained `..` and
/// filters that start again from `$` multiply: `{..a..a..a..a..a..a}` over
/// a 128-deep document, or filters nested from `$`, would otherwise take
/// hours and gigabytes.
const MAX_EVAL_STEPS: usize = 1_000_000;

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Object members by name.
    Members(Vec<String>),
    /// Every member or element.
    Wildcard,
    /// The node and all of its descendants, in document order.
    Descendants,
    /// Array elements by index or slice.
    Elements(Vec<Selector>),
    /// Array elements that satisfy a filter.
    Filter(Box<Filter>),
}

#[derive(Clone, Debug, PartialEq)]
enum Selector {
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
}

#[derive(Clone, Debug, PartialEq)]
struct Filter {
    left: Operand,
    /// `None`: the left side only has to exist.
    compare: Option<(Op, Operand)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
enum Operand {
    /// A path from the current element (`@...`) or from the root (`$...`).
    Path {
        from_root: bool,
        path: JsonPath,
    },
    Literal(Value),
}

impl JsonPath {
    /// Parses a template; the error says what is wrong and where.
    pub fn parse(template: &str) -> Result<JsonPath, String> {
        let chars: Vec<char> = template.chars().collect();
        let mut start = chars.iter().take_while(|c| c.is_whitespace()).count();
        let mut end = chars.len() - chars.iter().rev().take_while(|c| c.is_whitespace()).count();
        if start >= end {
            return Err("the JSONPath is empty".into());
        }
        if chars[start] == '{' {
            if chars[end - 1] != '}' || end - start < 2 {
                return Err(format!("{template:?} does not end with '}}'"));
            }
            start += 1;
            end -= 1;
        }
        let inner: String = chars[start..end].iter().collect();
        if (inner.contains('{') || inner.contains('}')) && !in_quotes_only(&inner) {
            return Err(format!(
                "{template:?} must be exactly one {{...}} expression (text around it and range/end are not supported here)"
            ));
        }
        // Offsets in messages count characters of the template as written.
        let mut p = Parser {
            chars: chars[..end].to_vec(),
            pos: start,
            depth: 0,
        };
        p.skip_spaces();
        let path = p.path(true).map_err(|e| format!("{template:?}: {e}"))?;
        p.skip_spaces();
        if p.pos < p.chars.len() {
            return Err(format!(
                "{template:?}: unexpected {:?} at offset {}",
                p.chars[p.pos], p.pos
            ));
        }
        Ok(path)
    }

    /// Every value the template selects in `doc`, in document order.
    pub fn find<'a>(&self, doc: &'a Value) -> Result<Vec<&'a Value>, String> {
        self.find_from(doc, doc, &Cell::new(MAX_EVAL_STEPS))
    }

    fn find_from<'a>(
        &self,
        root: &'a Value,
        start: &'a Value,
        budget: &Cell<usize>,
    ) -> Result<Vec<&'a Value>, String> {
        let mut nodes = vec![start];
        for step in &self.steps {
            let mut next = Vec::new();
            for node in nodes {
                let before = next.len();
                step.apply(root, node, &mut next, budget)?;
                spend(budget, 1 + next.len() - before)?;
            }
            nodes = next;
        }
        Ok(nodes)
    }
}

/// Takes `n` from the evaluation budget.
fn spend(budget: &Cell<usize>, n: usize) -> Result<(), String> {
    match budget.get().checked_sub(n) {
        Some(left) => {
            budget.set(left);
            Ok(())
        }
        None => Err(format!(
            "the JSONPath takes more than {MAX_EVAL_STEPS} steps to evaluate on this document"
        )),
    }
}

/// Braces inside quoted keys (`['{a}']`) are fine; anywhere else they would
/// start or end another template expression.
fn in_quotes_only(s: &str) -> bool {
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '{' | '}') => return false,
            _ => {}
        }
    }
    true
}

impl Step {
    fn apply<'a>(
        &self,
        root: &'a Value,
        node: &'a Value,
        out: &mut Vec<&'a Value>,
        budget: &Cell<usize>,
    ) -> Result<(), String> {
        match self {
            Step::Members(names) => {
                if let Value::Object(map) = node {
                    out.extend(names.iter().filter_map(|n| map.get(n)));
                }
            }
            Step::Wildcard => match node {
                Value::Object(map) => out.extend(map.values()),
                Value::Array(items) => out.extend(items),
                _ => {}
            },
            Step::Descendants => descendants(node, out),
            Step::Elements(selectors) => {
                if let Value::Array(items) = node {
                    for s in selectors {
                        s.select(items, out)?;
                    }
                }
            }
            Step::Filter(filter) => {
                if let Value::Array(items) = node {
                    for item in items {
                        if filter.holds(root, item, budget)? {
                            out.push(item);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn descendants<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(node);
    match node {
        Value::Object(map) => map.values().for_each(|v| descendants(v, out)),
        Value::Array(items) => items.iter().for_each(|v| descendants(v, out)),
        _ => {}
    }
}

impl Selector {
    fn select<'a>(&self, items: &'a [Value], out: &mut Vec<&'a Value>) -> Result<(), String> {
        let len = items.len() as i64;
        let clamp = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
        match *self {
            Selector::Index(i) => {
                let at = if i < 0 { len + i } else { i };
                if !(0..len).contains(&at) {
                    return Err(format!(
                        "array index out of bounds: index {i}, length {len}"
                    ));
                }
                out.push(&items[at as usize]);
            }
            Selector::Slice(start, end, step) => {
                let step = step.unwrap_or(1).max(1);
                let (mut i, end) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(len)));
                while i < end {
                    out.push(&items[i as usize]);
                    // `[1::9223372036854775807]`: past the end, not around.
                    i = i.saturating_add(step);
                }
            }
        }
        Ok(())
    }
}

impl Filter {
    fn holds(&self, root: &Value, item: &Value, budget: &Cell<usize>) -> Result<bool, String> {
        let left = self.left.values(root, item, budget)?;
        match &self.compare {
            None => Ok(!left.is_empty()),
            Some((op, right)) => {
                let right = right.values(root, item, budget)?;
                match (left.first(), right.first()) {
                    (Some(l), Some(r)) => compare(l, *op, r),
                    _ => Ok(false),
                }
            }
        }
    }
}

impl Operand {
    fn values<'a>(
        &'a self,
        root: &'a Value,
        item: &'a Value,
        budget: &Cell<usize>,
    ) -> Result<Vec<&'a Value>, String> {
        match self {
            Operand::Path { from_root, path } => {
                path.find_from(root, if *from_root { root } else { item }, budget)
            }
            Operand::Literal(v) => Ok(vec![v]),
        }
    }
}

/// Compares like kubectl: numbers with numbers, strings with strings,
/// booleans and nulls for (in)equality only; anything else is an error.
fn compare(l: &Value, op: Op, r: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let ordering = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(_), Value::Bool(_)) | (Value::Null, Value::Null)
            if matches!(op, Op::Eq | Op::Ne) =>
        {
            Some(if l == r {
                Ordering::Equal
            } else {
                Ordering::Less
            })
        }
        _ => None,
    };
    let Some(o) = ordering else {
        return Err(format!(
            "incompatible types for comparison: {} and {}",
            type_name(l),
            type_name(r)
        ));
    };
    Ok(match op {
        Op::Eq => o == Ordering::Equal,
        Op::Ne => o != Ordering::Equal,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Filters open around the current position.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// A path up to the end of input or, inside a filter (`top` false), up
    /// to a character that cannot continue a path.
    fn path(&mut self, top: bool) -> Result<JsonPath, String> {
        let mut steps = Vec::new();
        if top {
            self.eat('$');
        }
        loop {
            match self.peek() {
                None => break,
                Some('.') if self.peek_at(1) == Some('.') => {
                    self.pos += 2;
                    steps.push(Step::Descendants);
                    match self.peek() {
                        Some('[') => {}
                        Some('*') => {
                            self.pos += 1;
                            steps.push(Step::Wildcard);
                        }
                        _ => steps.push(Step::Members(vec![self.name()?])),
                    }
                }
                Some('.') => {
                    self.pos += 1;
                    match self.peek() {
                        Some('*') => {
                            self.pos += 1;
                            steps.push(Step::Wildcard);
                        }
                        // `{.}` is the current node, as in kubectl.
                        None | Some('[') => {}
                        Some(c) if !top && is_terminator(c) => {}
                        _ => steps.push(Step::Members(vec![self.name()?])),
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    steps.push(self.bracket()?);
                }
                Some(c) if top && c.is_whitespace() => break,
                Some('*') if top => {
                    self.pos += 1;
                    steps.push(Step::Wildcard);
                }
                Some(c) if top => {
                    return Err(format!("unexpected {c:?} at offset {}", self.pos));
                }
                Some(_) => break,
            }
        }
        Ok(JsonPath { steps })
    }

    /// A member name after `.`, up to the next terminator; `\` escapes the
    /// character after it.
    fn name(&mut self) -> Result<String, String> {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '\\' {
                let escaped = self
                    .peek_at(1)
                    .ok_or("a '\\' at the end of the path escapes nothing")?;
                name.push(escaped);
                self.pos += 2;
                continue;
            }
            if is_terminator(c) {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        if name.is_empty() {
            return Err(format!("a member name is missing at offset {}", self.pos));
        }
        Ok(name)
    }

    /// What follows `[`, through the closing `]`.
    fn bracket(&mut self) -> Result<Step, String> {
        self.skip_spaces();
        let step = match self.peek() {
            Some('?') => {
                self.pos += 1;
                self.skip_spaces();
                if !self.eat('(') {
                    return Err(format!(
                        "a filter must be written [?(...)] at offset {}",
                        self.pos
                    ));
                }
                if self.depth == MAX_FILTER_DEPTH {
                    return Err(format!(
                        "filters nest more than {MAX_FILTER_DEPTH} deep at offset {}",
                        self.pos
                    ));
                }
                self.depth += 1;
                let filter = self.filter();
                self.depth -= 1;
                let filter = filter?;
                self.skip_spaces();
                if !self.eat(')') {
                    return Err(format!(
                        "the filter is not closed with ')' at offset {}",
                        self.pos
                    ));
                }
                Step::Filter(Box::new(filter))
            }
            Some('*') => {
                self.pos += 1;
                Step::Wildcard
            }
            Some('\'' | '"') => {
                let mut names = vec![self.quoted()?];
                loop {
                    self.skip_spaces();
                    if !self.eat(',') {
                        break;
                    }
                    self.skip_spaces();
                    names.push(self.quoted()?);
                }
                Step::Members(names)
            }
            _ => {
                let mut selectors = vec![self.selector()?];
                while self.eat(',') {
                    selectors.push(self.selector()?);
                }
                Step::Elements(selectors)
            }
        };
        self.skip_spaces();
        if !self.eat(']') {
            return Err(format!("expected ']' at offset {}", self.pos));
        }
        Ok(step)
    }

    fn quoted(&mut self) -> Result<String, String> {
        let quote = self
            .peek()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| format!("expected a quoted name at offset {}", self.pos))?;
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err("a quoted name is not closed".into()),
                Some('\\') if self.peek_at(1).is_some() => {
                    text.push(self.chars[self.pos + 1]);
                    self.pos += 2;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(text);
                }
                Some(c) => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        self.skip_spaces();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        self.skip_spaces();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("{text:?} at offset {start} is not an index"))
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let first = self.int()?;
        if !self.eat(':') {
            return first.map(Selector::Index).ok_or_else(|| {
                format!(
                    "expected an index, a slice, '*', a quoted name or a filter at offset {}",
                    self.pos
                )
            });
        }
        let end = self.int()?;
        let step = if self.eat(':') { self.int()? } else { None };
        if step.is_some_and(|s| s <= 0) {
            return Err("a slice step must be greater than 0".into());
        }
        Ok(Selector::Slice(first, end, step))
    }

    fn filter(&mut self) -> Result<Filter, String> {
        let left = self.operand()?;
        self.skip_spaces();
        let op = match (self.peek(), self.peek_at(1)) {
            (Some('='), Some('=')) => Some((Op::Eq, 2)),
            (Some('!'), Some('=')) => Some((Op::Ne, 2)),
            (Some('<'), Some('=')) => Some((Op::Le, 2)),
            (Some('>'), Some('=')) => Some((Op::Ge, 2)),
            (Some('<'), _) => Some((Op::Lt, 1)),
            (Some('>'), _) => Some((Op::Gt, 1)),
            _ => None,
        };
        let compare = match op {
            None => None,
            Some((op, width)) => {
                self.pos += width;
                Some((op, self.operand()?))
            }
        };
        Ok(Filter { left, compare })
    }

    fn operand(&mut self) -> Result<Operand, String> {
        self.skip_spaces();
        match self.peek() {
            Some(c @ ('@' | '$')) => {
                self.pos += 1;
                let path = self.path(false)?;
                Ok(Operand::Path {
                    from_root: c == '$',
                    path,
                })
            }
            Some('\'' | '"') => Ok(Operand::Literal(Value::String(self.quoted()?))),
            Some(_) => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                if text.is_empty() {
                    return Err(format!("a filter operand is missing at offset {start}"));
                }
                match text.as_str() {
                    "true" => Ok(Operand::Literal(Value::Bool(true))),
                    "false" => Ok(Operand::Literal(Value::Bool(false))),
                    "null" => Ok(Operand::Literal(Value::Null)),
                    _ => serde_json::from_str::<serde_json::Number>(&text)
                        .map(|n| Operand::Literal(Value::Number(n)))
                        .map_err(|_| {
                            format!(
                                "{text:?} at offset {start} is not a path, number, quoted string or boolean"
                            )
                        }),
                }
            }
            None => Err("a filter operand is missing".into()),
        }
    }
}

/// Characters that end a member name written after `.`.
fn is_terminator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}' | '(' | ')' | '=' | '!' | '<' | '>'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(path: &str, doc: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .find(doc)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_iter()
            .cloned()
            .collect()
    }

    fn fails(path: &str, doc: &Value) -> String {
        JsonPath::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .find(doc)
            .expect_err(path)
    }

    fn doc() -> Value {
        json!({
            "remaining": 0.42,
            "kind": "List",
            "metadata": {"labels": {"app.kubernetes.io/version": "1.2.3"}},
            "objectives": [
                {"name": "latency", "errorBudgetRemaining": 0.9, "ok": true},
                {"name": "availability", "errorBudgetRemaining": "0.15", "ok": false},
                {"name": "errors", "errorBudgetRemaining": 0.5}
            ]
        })
    }

    #[test]
    fn members_and_the_root() {
        let d = doc();
        assert_eq!(find("{.remaining}", &d), vec![json!(0.42)]);
        assert_eq!(find(".remaining", &d), vec![json!(0.42)]);
        assert_eq!(find("{$.remaining}", &d), vec![json!(0.42)]);
        assert_eq!(find("{['remaining']}", &d), vec![json!(0.42)]);
        assert_eq!(find("{$}", &json!(7)), vec![json!(7)]);
        assert_eq!(find("{.}", &json!(7)), vec![json!(7)]);
        assert_eq!(
            find(r"{.metadata.labels.app\.kubernetes\.io/version}", &d),
            vec![json!("1.2.3")]
        );
        assert_eq!(
            find(r#"{.metadata.labels["app.kubernetes.io/version"]}"#, &d),
            vec![json!("1.2.3")]
        );
        assert_eq!(find("  { .remaining }  ", &d), vec![json!(0.42)]);
        assert_eq!(find("{['{odd}']}", &json!({"{odd}": 1})), vec![json!(1)]);
        assert!(find("{.missing}", &d).is_empty());
        assert!(find("{.remaining.deeper}", &d).is_empty());
    }

    #[test]
    fn indexes_slices_and_wildcards() {
        let d = doc();
        let budget = |i: usize| d["objectives"][i]["errorBudgetRemaining"].clone();
        assert_eq!(
            find("{.objectives[0].errorBudgetRemaining}", &d),
            vec![budget(0)]
        );
        assert_eq!(
            find("{.objectives[-1].errorBudgetRemaining}", &d),
            vec![budget(2)]
        );
        assert_eq!(
            fails("{.objectives[3]}", &d),
            "array index out of bounds: index 3, length 3"
        );
        assert!(fails("{.objectives[-4]}", &d).contains("out of bounds"));
        assert_eq!(find("{.objectives[1:10].name}", &d).len(), 2);
        assert_eq!(
            find("{.objectives[0:2].errorBudgetRemaining}", &d),
            vec![budget(0), budget(1)]
        );
        assert_eq!(
            find("{.objectives[::2].name}", &d),
            vec![json!("latency"), json!("errors")]
        );
        assert_eq!(
            find("{.objectives[0,2].name}", &d),
            vec![json!("latency"), json!("errors")]
        );
        assert_eq!(find("{.objectives[*].name}", &d).len(), 3);
        assert_eq!(find("{.objectives.*}", &d).len(), 3);
        assert_eq!(find("{..errorBudgetRemaining}", &d).len(), 3);
        assert_eq!(find("{.metadata.*.*}", &d), vec![json!("1.2.3")]);
    }

    #[test]
    fn filters() {
        let d = doc();
        assert_eq!(
            find(
                "{.objectives[?(@.name=='availability')].errorBudgetRemaining}",
                &d
            ),
            vec![json!("0.15")]
        );
        assert_eq!(
            find(
                r#"{.objectives[?(@.name == "latency")].errorBudgetRemaining}"#,
                &d
            ),
            vec![json!(0.9)]
        );
        let numbers = json!({"items": [{"n": 1, "v": "a"}, {"n": 2.5, "v": "b"}, {"v": "c"}]});
        assert_eq!(find("{.items[?(@.n > 1)].v}", &numbers), vec![json!("b")]);
        assert_eq!(find("{.items[?(@.n <= 1)].v}", &numbers), vec![json!("a")]);
        assert_eq!(find("{.items[?(@.n == 1)].v}", &numbers), vec![json!("a")]);
        assert_eq!(find("{.items[?(@.v < 'b')].n}", &numbers), vec![json!(1)]);
        // kubectl refuses to order a string ("0.15") against a number.
        assert_eq!(
            fails("{.objectives[?(@.errorBudgetRemaining > 0.6)].name}", &d),
            "incompatible types for comparison: a string and a number"
        );
        assert!(fails("{.objectives[?(@.ok == 'x')].name}", &d).contains("incompatible types"));
        assert!(find("{.objectives[?(@.missing == 1)].name}", &d).is_empty());
        assert_eq!(
            find("{.objectives[?(@.ok)].name}", &d),
            vec![json!("latency"), json!("availability")]
        );
        assert_eq!(
            find("{.objectives[?(@.ok == false)].name}", &d),
            vec![json!("availability")]
        );
        assert_eq!(
            find("{.objectives[?(@.name != 'errors')].name}", &d).len(),
            2
        );
        assert_eq!(
            find("{.objectives[?(@.name == $.objectives[2].name)].ok}", &d),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn malformed_templates_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("{.a", "does not end"),
            ("{.a}{.b}", "exactly one"),
            ("{range .items[*]}{.a}{end}", "exactly one"),
            ("{.a[}", "offset 4"),
            ("{.a b}", "unexpected 'b' at offset 4"),
            ("{.a[1:2:0]}", "step must be greater than 0"),
            ("{.a[::-1]}", "step must be greater than 0"),
            ("{remaining}", "unexpected"),
            ("{.a[?(@.b == )]}", "operand is missing"),
            ("{.a[?@.b]}", "[?(...)]"),
            ("{.a['b}", "not closed"),
            ("{.a[x]}", "expected an index"),
        ] {
            let err = JsonPath::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
