//! The operations as one Redis function library: `common.lua` (keys,
//! capacity, grants, the queue), then one function per operation, each run
//! atomically by Redis.
//!
//! A library is loaded once, where a script would define the shared code
//! again on every call (about 6 µs each). The library's name and its
//! functions' names carry a digest of its code, so instances of different
//! ratekeeper versions on one Redis each call their own.
//!
//! On a cluster the functions publish with `SPUBLISH` (sharded pub/sub:
//! the message stays on the node of the partition's slot), elsewhere with
//! `PUBLISH`.

/// Every operation: its function's name suffix and body.
const OPERATIONS: [(&str, &str); 11] = [
    ("create", include_str!("lua/create.lua")),
    ("update", include_str!("lua/update.lua")),
    ("delete", include_str!("lua/delete.lua")),
    ("reset", include_str!("lua/reset.lua")),
    ("acquire", include_str!("lua/acquire.lua")),
    ("cancel", include_str!("lua/cancel.lua")),
    ("release", include_str!("lua/release.lua")),
    ("renew", include_str!("lua/renew.lua")),
    ("tick", include_str!("lua/tick.lua")),
    ("status", include_str!("lua/status.lua")),
    ("read", include_str!("lua/read.lua")),
];

/// The name of one operation's function.
pub struct Function(String);

impl Function {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// The library's code and every operation's function.
pub struct Scripts {
    /// What `FUNCTION LOAD` takes.
    pub library: String,
    pub create: Function,
    pub update: Function,
    pub delete: Function,
    pub reset: Function,
    pub acquire: Function,
    pub cancel: Function,
    pub release: Function,
    pub renew: Function,
    pub tick: Function,
    pub status: Function,
    pub read: Function,
}

impl Scripts {
    pub fn new(sharded: bool) -> Self {
        let publish = if sharded { "SPUBLISH" } else { "PUBLISH" };
        let body = library_body().replace("@PUBLISH@", publish).replace(
            "@INSTANCE_TTL_MS@",
            &crate::INSTANCE_TTL.as_millis().to_string(),
        );
        let digest = redis::Script::new(&body).get_hash().to_owned();
        let tag = &digest[..12];
        let function = |operation: &str| Function(format!("ratekeeper_{tag}_{operation}"));
        Scripts {
            library: format!(
                "#!lua name=ratekeeper_{tag}\n{}",
                body.replace("@TAG@", tag)
            ),
            create: function("create"),
            update: function("update"),
            delete: function("delete"),
            reset: function("reset"),
            acquire: function("acquire"),
            cancel: function("cancel"),
            release: function("release"),
            renew: function("renew"),
            tick: function("tick"),
            status: function("status"),
            read: function("read"),
        }
    }
}

/// The library without its header, function names tagged `@TAG@`.
fn library_body() -> String {
    let mut code = String::from(include_str!("lua/common.lua"));
    for (operation, body) in OPERATIONS {
        code.push_str(&format!(
            "\nredis.register_function('ratekeeper_@TAG@_{operation}', function(KEYS, ARGV)\n\
             begin(ARGV)\n{body}\nend)\n"
        ));
    }
    code
}
