-- GET requests over the paths listed one per line in $BENCH_PATHS, round robin.
local paths, i = {}, 0

function init(args)
   for line in io.lines(os.getenv("BENCH_PATHS")) do
      paths[#paths + 1] = line
   end
end

function request()
   i = i % #paths + 1
   return wrk.format("GET", paths[i])
end
