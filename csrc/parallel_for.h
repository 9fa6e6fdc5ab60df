// parallel_for: the batch loops of the extension (the batch encoder, the Moses pipeline's
// batch binding) on the calling thread plus worker threads, with no Python object touched.
//
// The workers are kept between calls (WorkerPool): starting and joining a thread costs
// ~40-50 us on the 2-core machines of bench/results, a good part of a batch of 64 texts
// (~300 us of work), and a kept thread has its buffers warm. After fork() (DataLoader
// workers), the child starts a pool of its own: the parent's threads do not exist there.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace xlm_fast {

// Process-wide worker threads that run one task at a time for whoever holds the pool.
class WorkerPool {
public:
    // The pool of this process, made on first use. Never destroyed: its threads wait for work
    // until the process ends.
    static WorkerPool& instance() {
        static std::atomic<WorkerPool*> current{nullptr};
        WorkerPool* pool = current.load();
        if (pool != nullptr && pool->pid_ == getpid()) return *pool;
        auto* fresh = new WorkerPool();  // in a forked child, the parent's pool is left (its threads are gone)
        if (current.compare_exchange_strong(pool, fresh)) return *fresh;
        delete fresh;  // another thread made one first (this one has started no thread)
        return *current.load();
    }

    // Runs `task` on up to `helpers` pool threads while the caller runs it too, and returns when
    // all have finished; false (nothing run) when another caller holds the pool or no thread
    // can be started, so that the caller can start threads of its own.
    bool run(size_t helpers, const std::function<void()>& task) {
        std::unique_lock<std::mutex> holder(hold_, std::try_to_lock);
        if (!holder.owns_lock()) return false;
        while (threads_.size() < helpers) {
            try {
                threads_.emplace_back([this]() { serve(); });
            } catch (const std::system_error&) {
                break;
            }
        }
        if (threads_.empty()) return false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = &task;
            wanted_ = std::min(helpers, threads_.size());
            started_ = finished_ = 0;
            ++generation_;
        }
        wake_.notify_all();
        task();
        std::unique_lock<std::mutex> lock(mutex_);
        // task() hands out the work by index and returns once all of it is taken: a helper that
        // has not woken by now would find none, so wait only for those that started (on a shared
        // machine a helper's wake-up can take longer than the whole batch).
        wanted_ = started_;
        done_.wait(lock, [this]() { return finished_ == wanted_; });
        task_ = nullptr;
        return true;
    }

private:
    WorkerPool() : pid_(getpid()) {}

    void serve() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&]() { return generation_ != seen; });
            seen = generation_;
            if (started_ == wanted_) continue;  // enough threads took this task
            ++started_;
            const std::function<void()>* task = task_;
            lock.unlock();
            (*task)();  // never throws: parallel_for's worker catches
            lock.lock();
            if (++finished_ == wanted_) done_.notify_all();
        }
    }

    const pid_t pid_;
    std::mutex hold_;   // held by the caller whose task the pool runs
    std::mutex mutex_;  // guards the fields below
    std::condition_variable wake_, done_;
    std::vector<std::thread> threads_;  // changed by the holder of hold_ only
    const std::function<void()>* task_ = nullptr;
    size_t wanted_ = 0, started_ = 0, finished_ = 0;
    uint64_t generation_ = 0;
};

// Runs work(index, state) for index in [0, count) on up to `threads` threads, the calling
// one included; each thread owns one default-constructed State (reusable buffers). Indices
// are handed out through an atomic counter (item lengths vary a lot). The first exception
// stops the other threads and is rethrown here. The other threads are the WorkerPool's, or,
// while another call holds it, threads started for this call; a thread the OS refuses to
// start leaves its share to the started ones.
template <typename State, typename Work>
void parallel_for(size_t count, size_t threads, Work work) {
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    const std::function<void()> worker = [&]() {
        try {
            State state;
            for (size_t i = next++; i < count; i = next++) work(i, state);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = count;
        }
    };
    if (threads <= 1 || !WorkerPool::instance().run(threads - 1, worker)) {
        std::vector<std::thread> pool;
        for (size_t t = 1; t < threads; ++t) {
            try {
                pool.emplace_back(worker);
            } catch (const std::system_error&) {
                break;
            }
        }
        worker();
        for (auto& thread : pool) thread.join();
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace xlm_fast
