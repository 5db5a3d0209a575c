"Timing shared by the benchmark scripts: functions run round-robin, so that a busy machine slows them all alike."
import time

def run_times(fs:dict, # {name: function of no argument}
              reps:int, # timed rounds
              warmup:int=1, # untimed rounds first
              sync=None, # called before and after each timed call (e.g. `torch.cuda.synchronize`)
             )->dict: # {name: (wall times, CPU times)} in seconds
    "Wall and CPU time of each call of each function of `fs`, run round-robin `reps` times after `warmup` rounds."
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for f in fs.values(): f()
    res = {k:([],[]) for k in fs}
    for _ in range(reps):
        for k,f in fs.items():
            sync(); w,c = time.perf_counter(),time.process_time()
            f(); sync()
            res[k][0].append(time.perf_counter()-w); res[k][1].append(time.process_time()-c)
    return res
