// parallel_for: the batch loops of the extension (the batch encoder, the Moses pipeline's
// batch binding) on plain std::threads, with no Python object touched.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace xlm_fast {

// Runs work(index, state) for index in [0, count) on up to `threads` threads, the calling
// one included; each thread owns one default-constructed State (reusable buffers). Indices
// are handed out through an atomic counter (item lengths vary a lot). The first exception
// stops the other threads and is rethrown here; a thread the OS refuses to start leaves its
// share to the started ones.
template <typename State, typename Work>
void parallel_for(size_t count, size_t threads, Work work) {
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&]() {
        try {
            State state;
            for (size_t i = next++; i < count; i = next++) work(i, state);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = count;
        }
    };
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
    if (error) std::rethrow_exception(error);
}

}  // namespace xlm_fast
