//! Random numbers, devices, streams and memory statistics.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlx::{Array, Backend, DeviceKind, Dtype, Stream, random};

#[test]
fn the_same_seed_draws_the_same_numbers() {
    let a = f32s(&random::uniform(&[64], Dtype::F32, Some(&random::key(7).unwrap())).unwrap());
    let b = f32s(&random::uniform(&[64], Dtype::F32, Some(&random::key(7).unwrap())).unwrap());
    let c = f32s(&random::uniform(&[64], Dtype::F32, Some(&random::key(8).unwrap())).unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
}

#[test]
fn split_keys_are_independent() {
    let keys = random::split(&random::key(1).unwrap(), 3).unwrap();
    assert_eq!(keys.shape(), vec![3, 2]);
    let k0 = keys.slice_axis(0, 0, 1).unwrap().squeeze(0).unwrap();
    let k1 = keys.slice_axis(0, 1, 2).unwrap().squeeze(0).unwrap();
    let a = f32s(&random::normal(&[16], Dtype::F32, Some(&k0)).unwrap());
    let b = f32s(&random::normal(&[16], Dtype::F32, Some(&k1)).unwrap());
    assert_ne!(a, b);
}

#[test]
fn categorical_never_picks_an_impossible_index() {
    let logits =
        Array::from_slice(&[f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0], &[1, 4]).unwrap();
    let logits = logits.broadcast_to(&[500, 4]).unwrap();
    let draws = random::categorical(&logits, -1, Some(&random::key(3).unwrap()))
        .unwrap()
        .to_vec::<u32>()
        .unwrap();
    assert!(draws.iter().all(|&d| d == 1 || d == 3));
    let ones = draws.iter().filter(|&&d| d == 1).count();
    // Equal odds: 500 fair draws land within 200..300 with overwhelming
    // probability; the seed makes the count fixed anyway.
    assert!((200..300).contains(&ones), "{ones} of 500");
}

#[test]
fn categorical_follows_the_softmax_of_the_logits() {
    let p = [0.1f64, 0.6, 0.3];
    let logits: Vec<f32> = p.iter().map(|v| v.ln() as f32).collect();
    let logits = Array::from_slice(&logits, &[1, 3])
        .unwrap()
        .broadcast_to(&[4000, 3])
        .unwrap();
    let draws = random::categorical(&logits, -1, Some(&random::key(11).unwrap()))
        .unwrap()
        .to_vec::<u32>()
        .unwrap();
    for (i, want) in p.iter().enumerate() {
        let freq = draws.iter().filter(|&&d| d as usize == i).count() as f64 / 4000.0;
        assert!((freq - want).abs() < 0.03, "index {i}: {freq} vs {want}");
    }
}

#[test]
fn gumbel_draws_are_finite() {
    let g = f32s(&random::gumbel(&[128], Dtype::F32, Some(&random::key(5).unwrap())).unwrap());
    assert!(g.iter().all(|v| v.is_finite()));
}

#[test]
fn the_cpu_build_reports_the_cpu_backend_and_version() {
    assert_eq!(mlx::version(), "0.32.4");
    assert!(mlx::device::is_available(DeviceKind::Cpu));
    if mlx::backend() == Backend::Cpu {
        assert_eq!(mlx::device::default_device().unwrap(), mlx::Device::CPU);
    }
    assert!(!mlx::Device::CPU.name().unwrap().is_empty());
}

#[test]
fn a_new_stream_runs_work_and_synchronizes() {
    let s = Stream::new(DeviceKind::Cpu).unwrap();
    let previous = Stream::default_for(DeviceKind::Cpu).unwrap();
    s.set_default().unwrap();
    let a = mlx::ones(&[4], Dtype::F32)
        .unwrap()
        .add(&mlx::ones(&[4], Dtype::F32).unwrap())
        .unwrap();
    mlx::async_eval(&[&a]).unwrap();
    s.synchronize().unwrap();
    assert_eq!(f32s(&a), vec![2.0; 4]);
    previous.set_default().unwrap();
}

#[test]
fn device_info_reports_numbers_it_has_and_none_for_others() {
    let device = mlx::device::default_device().unwrap();
    assert_eq!(device.info_size("no such key").unwrap(), None);
    if let Some(total) = device.info_size("total_memory").unwrap() {
        assert!(total > 1 << 20, "{total}");
    }
}

#[test]
fn the_graph_census_counts_what_is_left_to_compute() {
    let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let b = a.add(&a).unwrap();
    let c = b.exp().unwrap().add(&b).unwrap();
    let census = mlx::graph_census(&[&c]).unwrap();
    assert_eq!(census, vec![("Add".to_string(), 2), ("Exp".to_string(), 1)]);
    mlx::eval(&[&b]).unwrap();
    let census = mlx::graph_census(&[&c]).unwrap();
    assert_eq!(census, vec![("Add".to_string(), 1), ("Exp".to_string(), 1)]);
    mlx::eval(&[&c]).unwrap();
    assert!(mlx::graph_census(&[&c]).unwrap().is_empty());
}
