use serde_json::json;

use super::*;

fn dir() -> Directory {
    let mut d = Directory::default();
    d.operators.insert(
        "ann".into(),
        serde_json::from_value(
            json!({"id":"ann","name":"Ann","role":"operator","email":"ann@example.com"}),
        )
        .unwrap(),
    );
    d.operators.insert(
        "bob".into(),
        serde_json::from_value(json!({"id":"bob","name":"Bob","role":"operator"})).unwrap(),
    );
    d.groups.insert(
        "sales".into(),
        Group {
            id: "sales".into(),
            name: "Sales".into(),
            members: vec!["ann".into()],
        },
    );
    d
}

fn queue(groups: &[&str]) -> Queue {
    Queue {
        id: "q".into(),
        name: "Q".into(),
        operator_groups: groups.iter().map(|g| g.to_string()).collect(),
        supervisor_groups: vec![],
        settings: Default::default(),
        transcript_emails: vec![],
    }
}

#[test]
fn lines_are_served_by_their_groups_or_by_everyone() {
    let mut d = dir();
    d.queues.insert(
        "sales-line".into(),
        Queue {
            id: "sales-line".into(),
            ..queue(&["sales"])
        },
    );
    d.queues.insert(
        "open".into(),
        Queue {
            id: "open".into(),
            ..queue(&[])
        },
    );
    let ann = d.queues_served_by(&OperatorId::from("ann"));
    let bob = d.queues_served_by(&OperatorId::from("bob"));
    assert_eq!(ann, [QueueId::from("open"), QueueId::from("sales-line")]);
    assert_eq!(bob, [QueueId::from("open")]);
}

#[test]
fn references_and_fields_are_checked_each() {
    let d = dir();
    let mut q = queue(&["sales", "nope"]);
    q.id = "bad id".into();
    q.transcript_emails = vec![
        "x@y.org".into(),
        "not mail".into(),
        "a@b.c\r\nBcc: x@y.z".into(),
    ];
    q.settings.insert("language".into(), json!("ru"));
    let fields: Vec<String> = q.check(&d).into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "id",
            "operator_groups[1]",
            "transcript_emails[1]",
            "transcript_emails[2]",
            "settings.language"
        ]
    );
    assert!(queue(&["sales"]).check(&d).is_empty());
}

#[test]
fn what_is_referred_to_names_its_referrers() {
    let mut d = dir();
    d.queues.insert("q".into(), queue(&["sales"]));
    assert_eq!(Group::referrers(&d, "sales"), ["queues q"]);
    assert_eq!(Staff::referrers(&d, "ann"), ["groups sales"]);
    assert!(Staff::referrers(&d, "bob").is_empty());
}

#[test]
fn staff_e_mails_are_unique_and_passwords_never_shown() {
    let d = dir();
    let mut other: Staff = serde_json::from_value(
        json!({"id":"eve","name":"Eve","role":"supervisor","email":"ANN@example.com"}),
    )
    .unwrap();
    assert_eq!(other.check(&d)[0].field, "email");
    other.email = Some("eve@example.com".into());
    assert!(other.check(&d).is_empty());

    let mut body = json!({"id":"eve","password":"long enough","groups":["x"]})
        .as_object()
        .cloned()
        .unwrap();
    Staff::prepare(&mut body, None).unwrap();
    assert!(body.contains_key("password_hash") && !body.contains_key("password"));
    assert!(!body.contains_key("groups"));
    let mut short = json!({"password":"short"}).as_object().cloned().unwrap();
    assert_eq!(
        Staff::prepare(&mut short, None).unwrap_err()[0].field,
        "password"
    );
    let mut forged = json!({"password_hash":"$argon2id$x"})
        .as_object()
        .cloned()
        .unwrap();
    assert!(Staff::prepare(&mut forged, None).is_err());

    other.password_hash = Some(password::hash("long enough"));
    let view = other.view(&d);
    assert_eq!(view["has_password"], true);
    assert!(view.get("password_hash").is_none());
}

#[test]
fn a_ban_holds_by_visitor_device_or_address_until_it_ends() {
    let b = Ban {
        id: "b".into(),
        visitor: Some("v1".into()),
        device: Some("dev".into()),
        ip: Some("10.0.0.1".into()),
        until: Some(1_000),
        reason: None,
        by: "sup".into(),
    };
    assert!(b.holds(10, "v1", None, None));
    assert!(b.holds(10, "v2", Some("dev"), None));
    assert!(b.holds(10, "v2", None, Some("10.0.0.1")));
    assert!(!b.holds(10, "v2", Some("other"), Some("10.0.0.2")));
    assert!(!b.holds(1_000, "v1", None, None));
    let nothing = Ban {
        visitor: None,
        device: None,
        ip: None,
        ..b
    };
    assert_eq!(nothing.check(&Directory::default())[0].field, "visitor");
}

#[test]
fn rows_that_do_not_read_are_skipped() {
    let rows = [
        Row {
            kind: "groups".into(),
            id: "g".into(),
            body: r#"{"id":"g","name":"G"}"#.into(),
        },
        Row {
            kind: "groups".into(),
            id: "h".into(),
            body: "{broken".into(),
        },
        Row {
            kind: "unknown".into(),
            id: "x".into(),
            body: "{}".into(),
        },
    ];
    let d = Directory::from_rows(7, &rows);
    assert_eq!(d.version, 7);
    assert_eq!(d.groups.keys().collect::<Vec<_>>(), ["g"]);
}
