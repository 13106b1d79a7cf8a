use super::*;
use crate::config::{Origin, from_toml_str};

fn settings(secret: &str) -> Arc<Settings> {
    let toml = format!(
        "sticky_secret = \"{secret}\"\n\
         [pools.static]\nmembers = [\"127.0.0.1:1\"]\n\
         [pools.dynamic]\nmembers = [\"127.0.0.1:2\", \"127.0.0.1:3\"]\n"
    );
    let raw = from_toml_str(&toml).unwrap();
    Arc::new(Settings::build(&raw, &Origin::default()).unwrap())
}

fn dynamic(s: &Snapshot) -> &Pool {
    &s.pools[s.settings.pool_index("dynamic").unwrap()]
}

#[test]
fn a_rebuild_keeps_members_and_the_selector_of_an_unchanged_pool() {
    let none = (Discovered::new(), Registered::new());
    let a = build(settings("one"), &none.0, &none.1, None, 1);
    let b = build(settings("one"), &none.0, &none.1, Some(&a), 2);
    let (pa, pb) = (dynamic(&a), dynamic(&b));
    assert!(Arc::ptr_eq(&pa.members[0], &pb.members[0]));
    assert!(Arc::ptr_eq(&pa.selector, &pb.selector));
}

fn dns_pool(health: bool) -> Arc<Settings> {
    let checks = if health {
        ""
    } else {
        "[pools.api.health]\nenabled = false\n"
    };
    let toml = format!("[pools.api]\nmembers = [\"api.test:80\"]\n{checks}");
    let raw = from_toml_str(&toml).unwrap();
    Arc::new(Settings::build(&raw, &Origin::default()).unwrap())
}

fn resolved(octets: &[u8]) -> Discovered {
    let ips = octets
        .iter()
        .map(|i| IpAddr::from([10, 0, 0, *i]))
        .collect();
    Discovered::from([(("api.test".to_owned(), 80), ips)])
}

fn api(s: &Snapshot) -> &Pool {
    &s.pools[s.settings.pool_index("api").unwrap()]
}

#[test]
fn a_member_dns_stops_listing_stays_out_of_rotation_until_its_probe_has_spoken() {
    let none = Registered::new();
    let a = build(dns_pool(true), &resolved(&[1, 2]), &none, None, 1);
    let b = build(dns_pool(true), &resolved(&[2]), &none, Some(&a), 2);
    let gone = &api(&a).members[0];
    assert_eq!(api(&b).members.len(), 2, "kept while leaving");
    assert_eq!(gone.presence(), Presence::Leaving);
    assert!(!gone.is_available(clock::now_ms()) && !gone.is_last_resort());
    // Back in DNS before the probe: back in rotation.
    let c = build(dns_pool(true), &resolved(&[1, 2]), &none, Some(&b), 3);
    assert_eq!(gone.presence(), Presence::Listed);
    // Gone for good once the probe has spoken.
    let d = build(dns_pool(true), &resolved(&[2]), &none, Some(&c), 4);
    gone.set_presence(Presence::Gone);
    let e = build(dns_pool(true), &resolved(&[2]), &none, Some(&d), 5);
    assert_eq!(api(&e).members.len(), 1);
    // Without checks there is nothing to probe with: it leaves at once.
    let f = build(dns_pool(false), &resolved(&[1, 2]), &none, Some(&e), 6);
    let g = build(dns_pool(false), &resolved(&[2]), &none, Some(&f), 7);
    assert_eq!(api(&g).members.len(), 1);
}

#[test]
fn a_new_sticky_secret_re_derives_every_member_id() {
    let none = (Discovered::new(), Registered::new());
    let a = build(settings("one"), &none.0, &none.1, None, 1);
    let b = build(settings("two"), &none.0, &none.1, Some(&a), 2);
    let key = b.settings.sticky_key;
    let old_key = a.settings.sticky_key;
    for (before, after) in dynamic(&a).members.iter().zip(&dynamic(&b).members) {
        // The same member (its health, drain and counters stay), under its new id.
        assert!(Arc::ptr_eq(before, after));
        assert_eq!(after.id(), sticky::member_id(&key, after.addr));
        assert_ne!(after.id(), sticky::member_id(&old_key, after.addr));
    }
    // The static pool is sticky by cookie: its Set-Cookie carries the new id.
    let st = &b.pools[b.settings.pool_index("static").unwrap()];
    let cookie = st.cookies[0].as_ref().unwrap().to_str().unwrap();
    assert!(cookie.contains(&st.members[0].id().to_string()), "{cookie}");
}
