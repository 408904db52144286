//! Unit tests of budgets: caps, spend, warnings and notices.

use super::*;
use crate::infra::store::groups::GroupConfig;

fn group(caps: Caps) -> Group {
    Group {
        folder: "family".into(),
        chat_id: "tg:-1".into(),
        name: "Family".into(),
        trigger: "@Andy".into(),
        requires_trigger: true,
        is_main: false,
        config: GroupConfig {
            budget: caps,
            ..GroupConfig::default()
        },
        allowed_senders: None,
        added_at: 0,
    }
}

#[test]
fn group_caps_come_before_overall_ones_and_zero_means_none() {
    let g = group(Caps {
        daily: Some(2.0),
        monthly_tokens: Some(0),
        ..Caps::default()
    });
    let overall = Caps {
        monthly: Some(50.0),
        daily_tokens: Some(1_000_000),
        ..Caps::default()
    };
    let ids: Vec<String> = applicable(&overall, &g).iter().map(Budget::id).collect();
    assert_eq!(
        ids,
        [
            "group:family:daily:money",
            "overall:daily:tokens",
            "overall:monthly:money"
        ]
    );
    assert!(applicable(&Caps::default(), &group(Caps::default())).is_empty());
}

#[test]
fn spent_is_reaching_the_cap_in_its_unit() {
    let prices = Prices::default();
    let u = Usage {
        input: 100_000,
        output: 10_000,
        ..Usage::default()
    };
    // sonnet: 0.3 + 0.15 = $0.45; an unpriced model adds tokens only.
    let s = Spent::of(
        &[
            ("claude-sonnet-4-5".into(), u),
            (
                "local-llama".into(),
                Usage {
                    input: 5,
                    ..Usage::default()
                },
            ),
        ],
        &prices,
    );
    assert_eq!((s.tokens, s.unpriced_tokens), (110_005, 5));
    assert!((s.money - 0.45).abs() < 1e-9);
    let money = |m| Budget {
        folder: None,
        name: String::new(),
        period: Period::Day,
        limit: Limit::Money(m),
    };
    let tokens = |t| Budget {
        limit: Limit::Tokens(t),
        ..money(0.0)
    };
    // (budget, spent?)
    for (b, want) in [
        (money(0.45), true),
        (money(0.46), false),
        (money(0.0), false),
        (tokens(110_005), true),
        (tokens(110_006), false),
    ] {
        assert_eq!(b.is_spent(&s), want, "{b:?}");
    }
    assert!((money(0.5).fraction(&s) - 0.9).abs() < 1e-9);
}

#[test]
fn sentences_name_the_cap_the_period_and_the_way_out() {
    let p = Prices::default();
    let now = crate::infra::time::now_ms();
    let b = Budget {
        folder: Some("family".into()),
        name: "Family".into(),
        period: Period::Day,
        limit: Limit::Money(2.0),
    };
    assert_eq!(
        chat_notice(&b, &p, now),
        "Family has used its $2.00 for today; it resumes at 00:00 or when the owner raises it."
    );
    let r = refusal(&b, &p, now);
    assert!(
        r.starts_with("claw: group Family has used its $2.00 for today; it resumes at 00:00")
            && r.contains("claw group set family --budget-daily …")
            && r.contains("do not retry"),
        "{r}"
    );
    let s = Spent {
        tokens: 9,
        money: 1.7,
        unpriced_tokens: 0,
    };
    let w = warning(&b, &s, &p);
    assert!(w.contains("85% of its $2.00 for today ($1.70)"), "{w}");
    let overall = Budget {
        folder: None,
        name: String::new(),
        period: Period::Month,
        limit: Limit::Tokens(1_500_000),
    };
    let m = main_notice(&overall, &s, &p, now);
    assert!(
        m.starts_with("Budget: The assistant has used its overall budget of 1,500,000 tokens for this month (9 tokens so far); no group runs until ")
            && m.contains("[budget] monthly_tokens in claw.toml"),
        "{m}"
    );
    let why = reason(&overall, &s, &p, now);
    assert!(
        why.starts_with(
            "budget: 9 tokens of the overall monthly budget of 1,500,000 tokens used; resumes on 20"
        ),
        "{why}"
    );
}

#[test]
fn a_spent_monthly_budget_is_named_before_a_daily_one() {
    let b = |period, cap| Budget {
        folder: None,
        name: String::new(),
        period,
        limit: Limit::Tokens(cap),
    };
    let s = Spent {
        tokens: 10,
        ..Spent::default()
    };
    let states = vec![
        (b(Period::Day, 100), s),
        (b(Period::Day, 5), s),
        (b(Period::Month, 10), s),
    ];
    assert_eq!(blocking(&states).unwrap().0, b(Period::Month, 10));
    assert_eq!(blocking(&states[..2]).unwrap().0, b(Period::Day, 5));
    assert_eq!(blocking(&states[..1]), None);
}

#[test]
fn periods_cover_whole_local_days_and_months() {
    let now = crate::rules::cost::local_midnight_ms(
        chrono::NaiveDate::from_ymd_opt(2026, 12, 17).unwrap(),
    ) + 3_600_000;
    assert_eq!(
        Period::Day.days(now),
        ("2026-12-17".into(), "2026-12-17".into())
    );
    assert_eq!(
        Period::Month.days(now),
        ("2026-12-01".into(), "2026-12-31".into())
    );
    assert_eq!(Period::Month.resumes(now), "2027-01-01");
    assert_eq!(Period::Day.start_ms(now), now - 3_600_000);
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(thousands(999), "999");
}
