//! The route table: host + path prefix -> pool index. Pure and allocation-free per lookup.

use crate::config::RouteSettings;

/// Routes ordered so that the first match is the most specific one.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    routes: Vec<RouteSettings>,
}

impl RouteTable {
    /// Orders routes: host-specific before any-host, exact before prefix, longer before shorter.
    pub(crate) fn new(mut routes: Vec<RouteSettings>) -> Self {
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.exact.cmp(&a.exact))
                .then(b.path.len().cmp(&a.path.len()))
        });
        RouteTable { routes }
    }

    /// The pool for a request, or `None` when no route matches.
    #[cfg(test)]
    pub(crate) fn lookup(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.route(host, path).map(|r| r.pool)
    }

    /// The most specific route matching a request.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<&RouteSettings> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok
                && if r.exact {
                    path == r.path
                } else {
                    path.starts_with(&r.path)
                }
        })
    }

    /// The routes in match order.
    pub(crate) fn routes(&self) -> &[RouteSettings] {
        &self.routes
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, path: &str, exact: bool, pool: usize) -> RouteSettings {
        RouteSettings {
            host: host.map(Into::into),
            path: path.into(),
            exact,
            pool,
            max_body: None,
        }
    }

    fn lab() -> RouteTable {
        RouteTable::new(vec![
            r(None, "/", false, 0),
            r(None, "/api/", false, 1),
            r(None, "/api/student", true, 1),
        ])
    }

    #[test]
    fn default_routes_split_api_from_static() {
        let t = lab();
        assert_eq!(t.lookup(None, "/"), Some(0));
        assert_eq!(t.lookup(None, "/index.html"), Some(0));
        assert_eq!(t.lookup(None, "/api/student"), Some(1));
        assert_eq!(t.lookup(None, "/api/student/"), Some(1));
        assert_eq!(t.lookup(None, "/api"), Some(0));
        assert_eq!(t.lookup(None, "/apix"), Some(0));
    }

    #[test]
    fn host_routes_win_and_ignore_port_and_case() {
        let mut routes = lab().routes().to_vec();
        routes.push(r(Some("admin.lab"), "/", false, 2));
        let t = RouteTable::new(routes);
        assert_eq!(t.lookup(Some("Admin.Lab:8888"), "/api/student"), Some(2));
        assert_eq!(t.lookup(Some("other:8888"), "/api/student"), Some(1));
        assert_eq!(t.lookup(Some("[::1]:80"), "/"), Some(0));
    }

    #[test]
    fn no_match_without_catch_all() {
        let t = RouteTable::new(vec![r(None, "/api/", false, 1)]);
        assert_eq!(t.lookup(None, "/"), None);
    }
}
