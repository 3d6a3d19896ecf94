//! `sampan ps` with -a, -q, -l, -n, --no-trunc: the Python CLI's request and docker's table
//! (sampan.cli.containers_cmd.ps_cmd with the default format).

use crate::args::Ps;
use crate::http::{query, Client, Error};
use crate::text::{human_duration, json_str, py_str, tabulate};
use serde_json::Value;

const HEADER: &str = "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tPORTS\tNAMES";

/// The output, or None when the answer holds something this code does not render as the
/// Python CLI would (the caller then hands the call over: a GET changes nothing).
pub fn render(rows: &Value, p: &Ps, now: f64) -> Option<String> {
    let rows = rows.as_array()?;
    let mut out = String::new();
    if p.quiet {
        for s in rows {
            let id = s.get("Id")?.as_str()?;
            out.push_str(if p.no_trunc { id } else { prefix(id, 12) });
            out.push('\n');
        }
        return Some(out);
    }
    let trunc = !p.no_trunc;
    let mut text = String::from(HEADER);
    text.push('\n');
    for s in rows {
        let id = s.get("Id")?.as_str()?;
        let id = if trunc {
            prefix(id.split_once(':').map_or(id, |x| x.1), 12)
        } else {
            id
        };
        let cmd = match s.get("Command") {
            None => "",
            Some(v) => v.as_str()?,
        };
        let mut quoted = String::new();
        if trunc && cmd.chars().count() > 20 {
            let cut: String = cmd.chars().take(19).chain(std::iter::once('…')).collect();
            json_str(&mut quoted, &cut, false);
        } else {
            json_str(&mut quoted, cmd, false);
        }
        let names = match s.get("Names") {
            None | Some(Value::Null) => String::new(),
            Some(v) => v
                .as_array()?
                .iter()
                .map(|n| n.as_str().map(|n| n.trim_start_matches('/')))
                .collect::<Option<Vec<_>>>()?
                .join(","),
        };
        let cells = [
            id.to_string(),
            field(s, "Image"),
            quoted,
            time_ago(s.get("Created"), now)?,
            field(s, "Status"),
            ports(s)?,
            names,
        ];
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    out.push_str(&tabulate(&text));
    Some(out)
}

fn prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn field(s: &Value, key: &str) -> String {
    s.get(key).map_or_else(String::new, py_str)
}

fn time_ago(v: Option<&Value>, now: f64) -> Option<String> {
    let t = match v {
        None | Some(Value::Null) => return Some("N/A".into()),
        Some(Value::String(s)) if s.is_empty() => return Some("N/A".into()),
        Some(Value::Number(n)) => n.as_f64()?,
        _ => return None,
    };
    if t <= 0.0 {
        return Some("N/A".into());
    }
    Some(human_duration(now - t) + " ago")
}

/// The PORTS column (sampan.cli.networks_cmd.ps_ports).
fn ports(s: &Value) -> Option<String> {
    let list = match s.get("Ports") {
        None | Some(Value::Null) => return Some(String::new()),
        Some(v) => v.as_array()?,
    };
    let mut keyed = Vec::new();
    for p in list {
        let private = match p.get("PrivatePort") {
            None => 0,
            Some(v) => v.as_i64()?,
        };
        let kind = match p.get("Type") {
            None => "",
            Some(v) => v.as_str()?,
        };
        keyed.push((private, kind.to_string(), p));
    }
    keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut parts = Vec::new();
    for (_, _, p) in keyed {
        let private = py_str(p.get("PrivatePort")?);
        let kind = py_str(p.get("Type")?);
        let public = p.get("PublicPort").filter(|v| truthy(v));
        match public {
            Some(pub_) => {
                let ip = p
                    .get("IP")
                    .filter(|v| truthy(v))
                    .map_or("0.0.0.0".to_string(), py_str);
                parts.push(format!("{ip}:{}->{private}/{kind}", py_str(pub_)));
            }
            None => parts.push(format!("{private}/{kind}")),
        }
    }
    Some(parts.join(", "))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The request, as the Python CLI makes it.
pub fn target(p: &Ps) -> String {
    let last = if p.latest { 1 } else { p.last };
    let mut params = vec![("all", if p.all || last > 0 { "1" } else { "0" }.to_string())];
    if last > 0 {
        params.push(("limit", last.to_string()));
    }
    format!("/containers/json{}", query(&params))
}

pub fn fetch(c: &mut Client, p: &Ps) -> Result<Value, Error> {
    let data = c.request("GET", &target(p), None)?;
    serde_json::from_slice(&data).map_err(|e| Error::Proto(e.to_string()))
}
