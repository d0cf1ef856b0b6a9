//! A tiny reader of `thin_dump`'s XML: the superblock's attributes and
//! every device's details and mappings.

#![allow(dead_code)]

use std::collections::BTreeMap;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct XmlDev {
    pub mapped_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    pub snap_time: u32,
    /// vblock -> (data block, time)
    pub map: BTreeMap<u64, (u64, u32)>,
}

#[derive(Debug, Default)]
pub struct XmlDump {
    pub attrs: BTreeMap<String, String>,
    pub devs: BTreeMap<u64, XmlDev>,
}

fn tags(xml: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find('<') {
        let e = rest[s..].find('>').unwrap() + s;
        let body = rest[s + 1..e].trim_end_matches('/').trim();
        rest = &rest[e + 1..];
        let (name, mut a) = match body.find(char::is_whitespace) {
            Some(i) => (&body[..i], &body[i..]),
            None => (body, ""),
        };
        let mut attrs = BTreeMap::new();
        while let Some(eq) = a.find("=\"") {
            let k = a[..eq].trim().to_string();
            let v_end = a[eq + 2..].find('"').unwrap() + eq + 2;
            attrs.insert(k, a[eq + 2..v_end].to_string());
            a = &a[v_end + 1..];
        }
        out.push((name.to_string(), attrs));
    }
    out
}

pub fn num<T: std::str::FromStr>(a: &BTreeMap<String, String>, k: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    a.get(k)
        .unwrap_or_else(|| panic!("attr {k}"))
        .parse()
        .unwrap()
}

pub fn parse_dump(xml: &str) -> XmlDump {
    let mut dump = XmlDump::default();
    let mut defs: BTreeMap<String, Vec<(u64, u64, u32)>> = BTreeMap::new();
    let mut cur_def: Option<String> = None;
    let mut cur_dev: Option<u64> = None;
    let add = |dump: &mut XmlDump,
               defs: &mut BTreeMap<String, Vec<(u64, u64, u32)>>,
               cur_def: &Option<String>,
               cur_dev: Option<u64>,
               o: u64,
               d: u64,
               t: u32| {
        if let Some(n) = cur_def {
            defs.get_mut(n).unwrap().push((o, d, t));
        } else {
            dump.devs
                .get_mut(&cur_dev.unwrap())
                .unwrap()
                .map
                .insert(o, (d, t));
        }
    };
    for (name, a) in tags(xml) {
        match name.as_str() {
            "superblock" => dump.attrs = a,
            "def" => {
                let n = a["name"].clone();
                defs.insert(n.clone(), Vec::new());
                cur_def = Some(n);
            }
            "/def" => cur_def = None,
            "device" => {
                let id = num(&a, "dev_id");
                dump.devs.insert(
                    id,
                    XmlDev {
                        mapped_blocks: num(&a, "mapped_blocks"),
                        transaction: num(&a, "transaction"),
                        creation_time: num(&a, "creation_time"),
                        snap_time: num(&a, "snap_time"),
                        map: BTreeMap::new(),
                    },
                );
                cur_dev = Some(id);
            }
            "/device" => cur_dev = None,
            "ref" => {
                let v = defs[&a["name"]].clone();
                for (o, d, t) in v {
                    add(&mut dump, &mut defs, &cur_def, cur_dev, o, d, t);
                }
            }
            "single_mapping" => add(
                &mut dump,
                &mut defs,
                &cur_def,
                cur_dev,
                num(&a, "origin_block"),
                num(&a, "data_block"),
                num(&a, "time"),
            ),
            "range_mapping" => {
                let (o, d, l): (u64, u64, u64) = (
                    num(&a, "origin_begin"),
                    num(&a, "data_begin"),
                    num(&a, "length"),
                );
                let t: u32 = num(&a, "time");
                for i in 0..l {
                    add(&mut dump, &mut defs, &cur_def, cur_dev, o + i, d + i, t);
                }
            }
            _ => {}
        }
    }
    dump
}
