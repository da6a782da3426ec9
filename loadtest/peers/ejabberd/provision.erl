%% Bulk account creation for the ejabberd peer of the tern-loadtest comparison.
%%
%% Not a module: compare.sh evaluates this text with `erl -hidden -eval "$(cat provision.erl)"`
%% from a short-lived Erlang node that joins the running ejabberd node over loopback
%% distribution. Parameters come from the environment:
%%   LT_NODE      ejabberd node name (ejabberd-lt@localhost)
%%   LT_HOST      XMPP domain (localhost)
%%   LT_PREFIX    user name prefix (lt)
%%   LT_USERS     number of accounts: PREFIX0 .. PREFIX(N-1)
%%   LT_PASSWORD  password of every account
%%   LT_ITER      PBKDF2 iterations (4096, ejabberd's default)
%%
%% Why: ejabberdctl starts a new Erlang VM per command (about 0.7 s per account), and the
%% HTTP API and in-band registration let ejabberd derive each SCRAM key itself in Erlang
%% code (about 18 ms of server CPU per account). Here the SCRAM-SHA-256 credentials are
%% derived with OpenSSL's PBKDF2 (crypto:pbkdf2_hmac/5) in this node, each account with its
%% own random salt exactly as ejabberd would store it, and handed to ejabberd_auth:try_register/3,
%% which stores a #scram{} record as it is. The result is the same Mnesia content as
%% registering each account by hand. Prints "created N existed M failed F" and exits non-zero
%% if any account could not be created.
Env = fun(Name) ->
          case os:getenv(Name) of
              false -> io:format(standard_error, "~s is not set~n", [Name]), halt(2);
              Value -> Value
          end
      end,
Node = list_to_atom(Env("LT_NODE")),
Host = list_to_binary(Env("LT_HOST")),
Prefix = list_to_binary(Env("LT_PREFIX")),
Users = list_to_integer(Env("LT_USERS")),
Password = list_to_binary(Env("LT_PASSWORD")),
Iter = list_to_integer(Env("LT_ITER")),
case net_kernel:connect_node(Node) of
    true -> ok;
    _ -> io:format(standard_error, "cannot reach ~p~n", [Node]), halt(3)
end,
Scram = fun(_) ->
            Salt = crypto:strong_rand_bytes(16),
            Salted = crypto:pbkdf2_hmac(sha256, Password, Salt, Iter, 32),
            StoredKey = crypto:hash(sha256, crypto:mac(hmac, sha256, Salted, <<"Client Key">>)),
            ServerKey = crypto:mac(hmac, sha256, Salted, <<"Server Key">>),
            {scram, base64:encode(StoredKey), base64:encode(ServerKey), base64:encode(Salt),
             sha256, Iter}
        end,
%% One worker per scheduler derives its share of the keys and registers them in batches of
%% 500 accounts per remote call.
Workers = erlang:system_info(schedulers_online),
Parent = self(),
Work = fun(W) ->
           Mine = [I || I <- lists:seq(0, Users - 1), I rem Workers =:= W],
           Batches = fun Split([]) -> [];
                         Split(L) when length(L) =< 500 -> [L];
                         Split(L) -> {A, B} = lists:split(500, L), [A | Split(B)]
                     end(Mine),
           Results = lists:flatmap(
                       fun(Batch) ->
                               Creds = [{<<Prefix/binary, (integer_to_binary(I))/binary>>, Scram(I)}
                                        || I <- Batch],
                               case rpc:call(Node, lists, map,
                                             [fun({U, S}) -> ejabberd_auth:try_register(U, Host, S) end,
                                              Creds]) of
                                   {badrpc, Why} -> [{error, Why} || _ <- Batch];
                                   List -> List
                               end
                       end, Batches),
           Parent ! {done, Results}
       end,
[spawn_link(fun() -> Work(W) end) || W <- lists:seq(0, Workers - 1)],
All = lists:append([receive {done, R} -> R end || _ <- lists:seq(1, Workers)]),
Created = length([ok || ok <- All]),
Existed = length([x || {error, exists} <- All]),
Failed = [E || E <- All, E =/= ok, E =/= {error, exists}],
io:format("created ~p existed ~p failed ~p~n", [Created, Existed, length(Failed)]),
case Failed of
    [] -> halt(0);
    [First | _] -> io:format(standard_error, "first failure: ~p~n", [First]), halt(1)
end.
