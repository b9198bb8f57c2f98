//! Ping: any domain string gets a clean answer.

use ocloudview_atp::pb::PingRequest;
use proptest::prelude::*;

use crate::{bed::*, generators::*};

#[test]
fn ping_answers_cleanly_whatever_the_domain() {
    let bed = Bed::start();
    bed.check("Ping", domain(), |domain| {
        let mut c = bed.client();
        let req = PingRequest {
            domain: domain.clone(),
        };
        match bed.block("Ping", c.ping(req.clone()))? {
            Ok(_) => {
                seen("Ping", "OK");
                prop_assert_eq!(&domain, "host", "Ping succeeded for another name");
            }
            Err(st) => {
                prop_assert_ne!(&domain, "host", "Ping of the real guest failed: {:?}", st);
                clean("Ping", &req, &st, &[])?;
            }
        }
        Ok(())
    });
}
