//! MLX's collectives through the binding, between two processes on the
//! `ring` backend over loopback: the test starts two copies of this test
//! binary as ranks 0 and 1 (`MLX_HOSTFILE`, `MLX_RANK`), each checks what
//! it received, and the test passes when both exit with success.

use std::process::Command;
use std::time::{Duration, Instant};

use mlx::distributed::{Group, init};
use mlx::{Array, Dtype};

/// Set in the two rank processes.
const RANK_ENV: &str = "MLX_BINDING_TEST_RANK";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// What each rank runs: every collective once, its result checked.
fn rank_body(group: &Group) -> mlx::Result<()> {
    let (rank, size) = (group.rank(), group.size());
    assert_eq!(size, 2);
    let r = rank as f32;
    let x = Array::from_slice(&[r + 1.0, 10.0 * r], &[2])?;
    assert_eq!(group.all_sum(&x)?.to_vec::<f32>()?, [3.0, 10.0]);
    assert_eq!(group.all_max(&x)?.to_vec::<f32>()?, [2.0, 10.0]);
    let ids = Array::from_slice(&[rank * 7, 5], &[1, 2])?;
    assert_eq!(group.all_sum(&ids)?.to_vec::<i32>()?, [7, 10]);
    let gathered = group.all_gather(&x)?;
    assert_eq!(gathered.shape(), [4]);
    assert_eq!(gathered.to_vec::<f32>()?, [1.0, 0.0, 2.0, 10.0]);
    // Rank 1 sends to rank 0 twice (received by shape, then like an
    // array); rank 0 answers once.
    let payload = Array::from_slice(&[1.5f32, -2.0, 3.25, 4.0, 5.0, 6.0], &[2, 3])?;
    if rank == 1 {
        group.send(&payload, 0)?.eval()?;
        group.send(&payload, 0)?.eval()?;
        let back = group.recv(&[1], Dtype::I32, 0)?;
        assert_eq!(back.to_vec::<i32>()?, [42]);
    } else {
        let got = group.recv(&[2, 3], Dtype::F32, 1)?;
        assert_eq!(got.to_vec::<f32>()?, payload.to_vec::<f32>()?);
        let like = group.recv_like(&payload, 1)?;
        assert_eq!(like.to_vec::<f32>()?, payload.to_vec::<f32>()?);
        let answer = Array::from_slice(&[42i32], &[1])?;
        group.send(&answer, 1)?.eval()?;
    }
    assert!(group.send(&x, rank).is_err(), "a rank is not its own peer");
    assert!(group.recv(&[1], Dtype::F32, 2).is_err(), "no rank 2");
    group.barrier()
}

#[test]
fn two_ring_ranks_sum_gather_send_and_receive() {
    if std::env::var_os(RANK_ENV).is_some() {
        let group = init("ring", true).expect("joining the ring");
        rank_body(&group).expect("every collective runs");
        return;
    }
    assert!(mlx::distributed::is_available("ring").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.json");
    std::fs::write(
        &hostfile,
        format!(
            r#"[["127.0.0.1:{}"],["127.0.0.1:{}"]]"#,
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut ranks: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "two_ring_ranks_sum_gather_send_and_receive"])
                .args(["--test-threads", "1", "--nocapture"])
                .env(RANK_ENV, "1")
                .env("MLX_HOSTFILE", &hostfile)
                .env("MLX_RANK", rank.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut statuses = [None, None];
    while statuses.iter().any(Option::is_none) && Instant::now() < deadline {
        for (rank, child) in ranks.iter_mut().enumerate() {
            if statuses[rank].is_none() {
                statuses[rank] = child.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for child in &mut ranks {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (rank, status) in statuses.iter().enumerate() {
        let status = status.unwrap_or_else(|| panic!("rank {rank} did not finish"));
        assert!(status.success(), "rank {rank}: {status}");
    }
}
