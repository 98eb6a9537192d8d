//! The final check of a failover run: newcomers join every room and
//! compare its member list with the members connected at the end.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Result;
use chat_client::Client;

/// Each room with the sorted names of its members connected now.
pub(super) fn expected_lists(
    room_members: &[(String, Vec<usize>)],
    names: &[String],
    connected: &[AtomicBool],
) -> Vec<(String, Vec<String>)> {
    room_members
        .iter()
        .map(|(room, members)| {
            let mut want: Vec<String> = members
                .iter()
                .filter(|i| connected[**i].load(Relaxed))
                .map(|i| names[*i].clone())
                .collect();
            want.sort();
            (room.clone(), want)
        })
        .collect()
}

/// Rooms one checking connection asks about: within the default room limit
/// (32) and the room-operation burst (2 x 32), so no Join is refused.
const CHECK_BATCH: usize = 30;

/// How long the member lists may take to agree with who is connected:
/// they are written by the gateways as sessions come and go.
const CHECK_SETTLE: Duration = Duration::from_secs(5);

/// Asks newcomers for every room's members until each room lists exactly
/// `expected` (sorted names) or [`CHECK_SETTLE`] has passed; returns how
/// many rooms still list others, with a few examples.
pub(super) async fn check_rooms(
    url: &str,
    checker: &str,
    expected: &[(String, Vec<String>)],
) -> Result<(u64, Vec<String>)> {
    let deadline = Instant::now() + CHECK_SETTLE;
    let mut pending: Vec<&(String, Vec<String>)> = expected.iter().collect();
    let mut pass = 0;
    loop {
        let wrong = check_once(url, &format!("{checker}-{pass}"), &pending).await?;
        pass += 1;
        if wrong.is_empty() || Instant::now() >= deadline {
            let examples = wrong.iter().take(3).map(|(_, why)| why.clone()).collect();
            return Ok((wrong.len() as u64, examples));
        }
        pending = wrong.into_iter().map(|(room, _)| room).collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One pass of [`check_rooms`]: newcomers `{name}-0`, `-1`, ..., one
/// connection per [`CHECK_BATCH`] rooms; returns the rooms listed wrong.
async fn check_once<'a>(
    url: &str,
    name: &str,
    rooms: &[&'a (String, Vec<String>)],
) -> Result<Vec<(&'a (String, Vec<String>), String)>> {
    let mut wrong = Vec::new();
    for (batch, rooms) in rooms.chunks(CHECK_BATCH).enumerate() {
        let name = format!("{name}-{batch}");
        let mut client = Client::connect(url).await?;
        client.hello(&name).await?;
        for entry in rooms {
            let (room, want) = *entry;
            let joined = client.join_with(room, "", 1).await?;
            let mut got: Vec<String> = joined.members.into_iter().filter(|m| *m != name).collect();
            got.sort();
            if &got != want {
                let extra: Vec<&String> = got.iter().filter(|m| !want.contains(m)).collect();
                let missing: Vec<&String> = want.iter().filter(|m| !got.contains(m)).collect();
                wrong.push((
                    *entry,
                    format!("{room}: extra {extra:?}, missing {missing:?}"),
                ));
            }
        }
        let _ = client.close().await;
    }
    Ok(wrong)
}
