//! The snapshot's feature arguments: parsing with upstream's messages and
//! the table line part upstream prints.

use dm_rs_targets_host::snapshot_features::Features;

fn parse(line: &str) -> Result<Features, &'static str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Features::parse(&words)
}

fn table(f: Features) -> String {
    let mut s = String::new();
    f.fmt_table(&mut s).unwrap();
    s
}

const ZEROES: Features = Features {
    discard_zeroes_cow: true,
    discard_passdown_origin: false,
};
const BOTH: Features = Features {
    discard_zeroes_cow: true,
    discard_passdown_origin: true,
};

#[test]
fn accepted_lines() {
    assert_eq!(parse(""), Ok(Features::default()));
    assert_eq!(parse("0"), Ok(Features::default()));
    assert_eq!(parse("1 discard_zeroes_cow"), Ok(ZEROES));
    assert_eq!(parse("1 DISCARD_ZEROES_COW"), Ok(ZEROES));
    assert_eq!(
        parse("2 discard_zeroes_cow discard_passdown_origin"),
        Ok(BOTH)
    );
    assert_eq!(
        parse("2 discard_passdown_origin discard_zeroes_cow"),
        Ok(BOTH)
    );
    // Words after the group are not looked at (as upstream).
    assert_eq!(parse("1 discard_zeroes_cow extra"), Ok(ZEROES));
    assert_eq!(parse("0 discard_zeroes_cow"), Ok(Features::default()));
}

#[test]
fn refused_lines() {
    let count = Err("Invalid number of feature arguments");
    assert_eq!(
        parse("3 discard_zeroes_cow discard_passdown_origin x"),
        count
    );
    assert_eq!(parse("2 discard_zeroes_cow"), count);
    assert_eq!(parse("1"), count);
    assert_eq!(parse("-1"), count);
    assert_eq!(parse("x"), count);
    assert_eq!(parse("1 bogus"), Err("Unrecognised feature requested"));
    assert_eq!(
        parse("1 discard_passdown_origin"),
        Err("discard_passdown_origin feature depends on discard_zeroes_cow")
    );
}

#[test]
fn discard_bios() {
    assert_eq!(Features::default().discard_bios(), 0);
    assert_eq!(ZEROES.discard_bios(), 1);
    assert_eq!(BOTH.discard_bios(), 2);
}

#[test]
fn table_line() {
    assert_eq!(table(Features::default()), "");
    assert_eq!(table(ZEROES), " 1 discard_zeroes_cow");
    assert_eq!(table(BOTH), " 2 discard_zeroes_cow discard_passdown_origin");
    // What is printed parses back to the same features.
    for f in [Features::default(), ZEROES, BOTH] {
        assert_eq!(parse(&table(f)), Ok(f));
    }
}
